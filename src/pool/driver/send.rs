//! Writing a worker's flights, in order: into its ring where a frame fits a slot, else
//! into the ring's bulk area where it has room and the frame carries no descriptors,
//! else announced there and sent on its socket, as much at a time as the socket takes.

use std::io;
use std::os::fd::AsFd;

use super::{Driver, Flight};
use crate::pool::handle::Job;
use crate::wire::ring::Pushed;

impl Driver {
    /// Writes the flights not yet written, in order: into the worker's ring where a
    /// frame fits a slot, or through its bulk area where that has room and the frame
    /// carries no descriptors, else announced in the ring and sent on the socket (as much
    /// as it takes now; the rest when it has room again, before any frame behind it).
    /// Jobs keep their buffers and descriptors, so that one sent to a worker that dies
    /// before beginning it can be sent again.
    pub(super) fn write(&mut self) -> io::Result<()> {
        let before = self.unsent;
        let written = self.write_unrung();
        // One look at the worker's doorbell for all the frames put in the ring: the
        // fence that look needs costs as much as the rest of a small frame's push.
        if self.unsent > before {
            if let Some(w) = self.worker.as_ref() {
                w.ring().ring_if_asleep();
            }
        }
        written
    }

    fn write_unrung(&mut self) -> io::Result<()> {
        while self.unsent < self.flights.len() {
            let Some(w) = self.worker.as_ref() else {
                return Ok(());
            };
            let job = unwritten(&self.flights[self.unsent]);
            let (frame, tail) = (&job.frame[..], &job.tail[..]);
            if !self.spilling {
                match w.ring().push_unrung(&[frame, tail], job.fds.len()) {
                    Pushed::Shared => {
                        self.sent_one();
                        continue;
                    }
                    Pushed::Spilled => self.spilling = true,
                    Pushed::Full => {
                        // Not reached: a worker has fewer tasks out than its ring has
                        // slots.
                        return Err(io::Error::other("the worker's ring is full"));
                    }
                }
            }
            let fds: Vec<_> = match self.written {
                0 => job.fds.iter().map(AsFd::as_fd).collect(),
                _ => Vec::new(),
            };
            let mut parts: [&[u8]; 2] = [&[]; 2];
            let mut n = 0;
            if self.written < frame.len() {
                parts[n] = &frame[self.written..];
                n += 1;
            }
            let tail_from = self.written.saturating_sub(frame.len());
            if tail_from < tail.len() {
                parts[n] = &tail[tail_from..];
                n += 1;
            }
            match w.send_now(&parts[..n], &fds) {
                Ok(sent) => {
                    self.written += sent;
                    if self.written == frame.len() + tail.len() {
                        self.spilling = false;
                        self.sent_one();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The flight being written is wholly out.
    fn sent_one(&mut self) {
        self.unsent += 1;
        self.written = 0;
        self.give_back_armed = true;
    }
}

/// The job of a flight that is not completely written yet; only written flights are
/// ever handed back, so it is always there.
fn unwritten(f: &Flight) -> &Job {
    match &f.job {
        Some(job) => job,
        None => unreachable!("a flight is handed back only once it is written"),
    }
}
