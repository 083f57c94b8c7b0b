//! One-way pipes: [`simplex()`] makes a [`Receiver`] and a [`Sender`].

use super::*;

/// Makes a one-way pair: the [`Receiver`] only receives, the [`Sender`] only sends
/// (Python's `Pipe(duplex=False)`, in the same order: receiving end first).
///
/// # Errors
/// The system refused a socketpair.
pub fn simplex<T>() -> io::Result<(Receiver<T>, Sender<T>)> {
    let (r, s) = sys::sock::pair(sys::sock::Kind::Stream)?;
    // The kernel enforces the direction for every process that gets an end.
    sys::sock::shutdown_write(r.as_fd())?;
    // Side 0 writes lane 0, which side 1 reads.
    let (ring_s, ring_r) = PipeRing::pair()?;
    Ok((
        Receiver {
            conn: Connection::with_ring(r, Some(ring_r)),
        },
        Sender {
            conn: Connection::with_ring(s, Some(ring_s)),
        },
    ))
}

/// The receiving end of a [`simplex()`] pipe.
pub struct Receiver<T> {
    conn: Connection<(), T>,
}

impl<T> Receiver<T> {
    /// Its connection, for [`connection::wait`](crate::connection::wait).
    pub(crate) fn connection(&self) -> &Connection<(), T> {
        &self.conn
    }
}

/// The sending end of a [`simplex()`] pipe.
pub struct Sender<T> {
    conn: Connection<T, ()>,
}

impl<T: Serialize + 'static> Sender<T> {
    /// Sends a value; see [`Connection::send`].
    ///
    /// # Errors
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    /// As [`Connection::send`].
    pub async fn send(&self, value: &T) -> Result<(), SendError> {
        self.conn.send(value).await
    }

    /// Blocking form of [`send`](Self::send).
    ///
    /// # Errors
    /// As [`Connection::send`].
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`send`](Self::send) there.
    #[track_caller]
    pub fn blocking_send(&self, value: &T) -> Result<(), SendError> {
        crate::blocking::assert_may_block("blocking_send", "send");
        self.conn.blocking_send(value)
    }
}

impl<T> Sender<T> {
    /// Sends raw bytes; see [`Connection::send_bytes`].
    ///
    /// # Errors
    /// As [`Connection::send_bytes`].
    ///
    /// # Cancel safety
    /// As [`Connection::send_bytes`].
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.conn.send_bytes(bytes).await
    }

    /// Blocking form of [`send_bytes`](Self::send_bytes).
    ///
    /// # Errors
    /// As [`Connection::send_bytes`].
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`send_bytes`](Self::send_bytes) there.
    #[track_caller]
    pub fn blocking_send_bytes(&self, bytes: &[u8]) -> Result<(), SendError> {
        crate::blocking::assert_may_block("blocking_send_bytes", "send_bytes");
        self.conn.blocking_send_bytes(bytes)
    }

    /// Closes this handle (the same as dropping it).
    pub fn close(self) {}
}

impl<T: DeserializeOwned + 'static> Receiver<T> {
    /// Receives the next value; see [`Connection::recv`].
    ///
    /// # Errors
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&self) -> Result<T, RecvError> {
        self.conn.recv().await
    }

    /// Blocking form of [`recv`](Self::recv).
    ///
    /// # Errors
    /// As [`Connection::recv`].
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv`](Self::recv) there.
    #[track_caller]
    pub fn blocking_recv(&self) -> Result<T, RecvError> {
        crate::blocking::assert_may_block("blocking_recv", "recv");
        self.conn.blocking_recv()
    }

    /// See [`Connection::try_recv`].
    ///
    /// # Errors
    /// As [`Connection::try_recv`].
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.conn.try_recv()
    }

    /// See [`Connection::recv_timeout`].
    ///
    /// # Errors
    /// As [`Connection::recv_timeout`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.conn.recv_timeout(timeout).await
    }

    /// See [`Connection::blocking_recv_timeout`].
    ///
    /// # Errors
    /// As [`Connection::recv_timeout`].
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_timeout`](Self::recv_timeout) there.
    #[track_caller]
    pub fn blocking_recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_timeout", "recv_timeout");
        self.conn.blocking_recv_timeout(timeout)
    }
}

impl<T> Receiver<T> {
    /// See [`Connection::recv_bytes`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.conn.recv_bytes().await
    }

    /// See [`Connection::blocking_recv_bytes`].
    ///
    /// # Errors
    /// As [`Connection::recv_bytes`].
    ///
    /// # Panics
    /// If called from within an async runtime context.
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`recv_bytes`](Self::recv_bytes) there.
    #[track_caller]
    pub fn blocking_recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        crate::blocking::assert_may_block("blocking_recv_bytes", "recv_bytes");
        self.conn.blocking_recv_bytes()
    }

    /// See [`Connection::poll`].
    ///
    /// # Errors
    /// As [`Connection::poll`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn poll(&self, timeout: Duration) -> io::Result<bool> {
        self.conn.poll(timeout).await
    }

    /// See [`Connection::blocking_poll`].
    ///
    /// # Errors
    /// As [`Connection::blocking_poll`].
    ///
    /// # Panics
    /// If called from an async context, where it would stall the runtime; `.await`
    /// [`poll`](Self::poll) there.
    #[track_caller]
    pub fn blocking_poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        crate::blocking::assert_may_block("blocking_poll", "poll");
        self.conn.blocking_poll(timeout)
    }

    /// Closes this handle (the same as dropping it).
    pub fn close(self) {}
}

macro_rules! half_impls {
    ($half:ident) => {
        impl<T> AsRawFd for $half<T> {
            fn as_raw_fd(&self) -> RawFd {
                self.conn.as_raw_fd()
            }
        }

        impl<T> fmt::Debug for $half<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($half))
                    .field("fd", &self.conn.as_raw_fd())
                    .field("type", &type_name::<T>())
                    .finish()
            }
        }

        impl<T> Serialize for $half<T> {
            fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
                self.conn.serialize(s)
            }
        }

        impl<'de, T> Deserialize<'de> for $half<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($half {
                    conn: Connection::deserialize(d)?,
                })
            }
        }
    };
}

half_impls!(Sender);
half_impls!(Receiver);
