//! Authenticated connections between processes that did not start each other:
//! Python's `multiprocessing.connection` `Listener` and `Client`.
//!
//! A [`Listener`] binds a TCP address or a unix socket path; [`Client::connect`] reaches
//! it. Before a single message passes, each side proves it knows the shared `authkey`:
//! the listener sends a fresh random challenge, the client answers with
//! HMAC-SHA256(authkey, challenge), then the client challenges the listener the same
//! way (Python 3.12's scheme, with its `{sha256}` tag). Digests are compared in
//! constant time. A peer with the wrong key gets `#FAILURE#` and nothing else. The
//! result is the same typed [`Connection`] that [`pipe`](crate::pipe()) makes, except
//! that handles cannot travel over it.
//!
//! # Talking to Python
//! Every message, the handshake's and the connection's, is framed exactly as
//! Python's `Connection` frames it: a big-endian signed 32-bit length (`-1` and a
//! 64-bit one above 2 GiB), then the bytes. So a Python
//! `multiprocessing.connection.Client(address, authkey=...)` can connect to a
//! [`Listener`], a [`Client`] to a Python `Listener`, and the two exchange
//! `send_bytes`/`recv_bytes` ([`Connection::send_bytes`], [`Connection::recv_bytes`]).
//! Typed messages ([`Connection::send`]) are postcard, which Python reads as bytes:
//! pickle is Python's alone.
//!
//! Python 3.11 and older speak the legacy HMAC-MD5 form of the handshake (a bare
//! 20-byte challenge, a bare 16-byte digest), and Python 3.12 still accepts it from
//! old peers. procpool refuses it
//! ([`AuthenticationError::LegacyDigestRefused`]) unless the [`Listener`] or
//! [`Client`] allows it with `allow_legacy_digest(true)`; see
//! [`Listener::allow_legacy_digest`] for why it is weaker. `tests/ipc/python_interop.rs`
//! runs both directions against the machine's `python3`.
//!
//! Handshake messages are at most 256 bytes, and a handshake must finish within the
//! listener's [handshake timeout](Listener::set_handshake_timeout): a peer that sends
//! nothing, garbage, or a 4 GiB length is dropped without anything being allocated
//! for it, and handshakes run concurrently, so it never holds up other clients.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use procpool::connection::{Client, Listener};
//!
//! let key = b"secret".to_vec();
//! let mut listener = Listener::bind("127.0.0.1:0".parse::<std::net::SocketAddr>()?, &key).await?;
//! let addr = listener.address().clone();
//! let client = tokio::spawn(async move {
//!     let conn: procpool::Connection<String> = Client::connect(&addr, b"secret").await?;
//!     conn.send(&"hello".to_owned()).await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! let conn: procpool::Connection<String> = listener.accept().await?;
//! assert_eq!(conn.recv().await?, "hello");
//! client.await?.unwrap();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pipe::Connection;
use crate::sys;

mod wait;

pub(crate) use wait::sealed;
pub use wait::{blocking_wait, wait, Waitable};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
const TAG: &[u8] = b"{sha256}";
/// Random bytes in a challenge, after its `{sha256}` tag (Python's `MESSAGE_LENGTH`).
const NONCE_LEN: usize = 40;
/// Lengths of a bare (legacy) challenge, which Python 3.11 and older send and which
/// Python answers with a bare HMAC-MD5 (its `_LEGACY_LENGTHS`).
const LEGACY_CHALLENGE_LENS: [usize; 2] = [20, 16];
const MD5_LEN: usize = 16;
/// Longest handshake message accepted.
const MAX_HANDSHAKE_MESSAGE: u32 = 256;
/// Default time a peer has to complete the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::authkey::authkey;

/// Where a [`Listener`] listens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path. On Linux, a path that begins with a NUL byte (`"\0name"`)
    /// names an abstract socket: no file is made, so none is left behind.
    Unix(PathBuf),
}

impl Address {
    /// An abstract unix socket name (Linux): no file is made, so none is left behind,
    /// even by a process killed with `SIGKILL`. Any local process may connect to it;
    /// the authkey is what keeps strangers out.
    ///
    /// ```
    /// let a = procpool::connection::Address::unix_abstract("my-service");
    /// assert_eq!(a.to_string(), "@my-service");
    /// ```
    pub fn unix_abstract(name: &str) -> Address {
        Address::Unix(PathBuf::from(format!("\0{name}")))
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Self {
        Address::Unix(p)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Self {
        Address::Unix(p.to_owned())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => match p.to_str().and_then(|s| s.strip_prefix('\0')) {
                // As `ss` and `netstat` print abstract names.
                Some(name) => write!(f, "@{name}"),
                None => write!(f, "{}", p.display()),
            },
        }
    }
}

/// The peer does not know the key (Python's `AuthenticationError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticationError {
    /// We challenged the peer and its answer was wrong.
    #[error("digest received was wrong")]
    DigestReceivedWasWrong,
    /// We answered the peer's challenge and it rejected our answer.
    #[error("digest sent was rejected")]
    DigestSentWasRejected,
    /// The peer speaks the legacy HMAC-MD5 handshake (Python 3.11 and older), which
    /// this side does not accept unless told to (`allow_legacy_digest(true)` on the
    /// [`Listener`] or [`Client`]).
    #[error(
        "the peer uses the legacy HMAC-MD5 handshake (Python 3.11 or older); \
         allow_legacy_digest(true) accepts it"
    )]
    LegacyDigestRefused,
}

/// What was wrong with a peer's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// It closed the connection before the handshake was over.
    #[error("the peer closed the connection")]
    Closed,
    /// It announced a message over 256 bytes (nothing was allocated for it).
    #[error("a handshake message over 256 bytes")]
    TooLong,
    /// It sent something other than a challenge.
    #[error("expected a challenge")]
    NotAChallenge,
    /// It challenged with a digest other than `{sha256}` (Python also knows
    /// `{sha384}`, `{sha3_256}`...; procpool answers SHA-256 and, if allowed, MD5).
    #[error("the peer's challenge asks for a digest other than {{sha256}}")]
    UnsupportedDigest,
    /// It answered our digest with something other than `#WELCOME#` or `#FAILURE#`.
    #[error("expected #WELCOME# or #FAILURE#")]
    NotAVerdict,
}

/// Why a connection was not established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The key did not match.
    #[error("authentication failed")]
    Authentication(#[source] AuthenticationError),
    /// The peer did not finish the handshake in time.
    #[error("the peer did not finish the handshake in time")]
    HandshakeTimeout,
    /// The peer spoke something other than the handshake; it was dropped.
    #[error("bad handshake")]
    Handshake(#[source] HandshakeError),
    /// A socket error.
    #[error("connection I/O error")]
    Io(#[source] io::Error),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ConnectError::Handshake(HandshakeError::Closed),
            _ => ConnectError::Io(e),
        }
    }
}

/// Writes one handshake message, framed as Python frames it (a big-endian `i32`
/// length, then the bytes).
async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = Vec::with_capacity(4 + len);
    // Our handshake messages are under 256 bytes.
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    w.write_all(&buf).await
}

/// Reads one handshake message; over [`MAX_HANDSHAKE_MESSAGE`] bytes (or a negative
/// length, which announces one over 2 GiB) is refused before anything is allocated.
async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ConnectError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len);
    let Some(len) = u32::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_HANDSHAKE_MESSAGE)
    else {
        return Err(ConnectError::Handshake(HandshakeError::TooLong));
    };
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn sha256_of(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(message);
    m
}

fn md5_of(key: &[u8], message: &[u8]) -> Hmac<Md5> {
    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(message);
    m
}

/// Whether our challenge `message` was answered right: `{sha256}` and its
/// HMAC-SHA256, or (if `legacy`) a bare HMAC-MD5, as Python 3.11 and older answer.
/// Digests are compared in constant time.
fn check_answer(
    key: &[u8],
    message: &[u8],
    answer: &[u8],
    legacy: bool,
) -> Result<(), AuthenticationError> {
    if let Some(digest) = answer.strip_prefix(TAG) {
        return sha256_of(key, message)
            .verify_slice(digest)
            .map_err(|_| AuthenticationError::DigestReceivedWasWrong);
    }
    if answer.len() == MD5_LEN {
        if !legacy {
            return Err(AuthenticationError::LegacyDigestRefused);
        }
        return md5_of(key, message)
            .verify_slice(answer)
            .map_err(|_| AuthenticationError::DigestReceivedWasWrong);
    }
    Err(AuthenticationError::DigestReceivedWasWrong)
}

/// Challenges the peer; Ok if it answered with the right digest.
async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8],
    legacy: bool,
) -> Result<(), ConnectError> {
    let mut nonce = [0u8; NONCE_LEN];
    sys::proc::random_bytes(&mut nonce)?;
    // The MAC covers the digest's name too, so an answer cannot pick a weaker one
    // than we asked for (only a bare MD5 answer, if `legacy` allows it).
    let message = [TAG, &nonce].concat();
    write_msg(s, &[CHALLENGE, &message]).await?;
    let answer = read_msg(s).await?;
    match check_answer(key, &message, &answer, legacy) {
        Ok(()) => {
            write_msg(s, &[WELCOME]).await?;
            Ok(())
        }
        Err(e) => {
            let _ = write_msg(s, &[FAILURE]).await;
            Err(ConnectError::Authentication(e))
        }
    }
}

/// Answers the peer's challenge; Ok if it accepted.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8],
    legacy: bool,
) -> Result<(), ConnectError> {
    let msg = read_msg(s).await?;
    let message = msg
        .strip_prefix(CHALLENGE)
        .ok_or(ConnectError::Handshake(HandshakeError::NotAChallenge))?;
    if LEGACY_CHALLENGE_LENS.contains(&message.len()) {
        // A peer of Python 3.11 or older: a bare challenge, answered by a bare MD5.
        if !legacy {
            return Err(ConnectError::Authentication(
                AuthenticationError::LegacyDigestRefused,
            ));
        }
        let digest = md5_of(key, message).finalize().into_bytes();
        write_msg(s, &[&digest]).await?;
    } else if message.starts_with(TAG) {
        let digest = sha256_of(key, message).finalize().into_bytes();
        write_msg(s, &[TAG, &digest]).await?;
    } else if message.starts_with(b"{") {
        return Err(ConnectError::Handshake(HandshakeError::UnsupportedDigest));
    } else {
        return Err(ConnectError::Handshake(HandshakeError::NotAChallenge));
    }
    match read_msg(s).await?.as_slice() {
        WELCOME => Ok(()),
        FAILURE => Err(ConnectError::Authentication(
            AuthenticationError::DigestSentWasRejected,
        )),
        _ => Err(ConnectError::Handshake(HandshakeError::NotAVerdict)),
    }
}

/// A connected socket of either family, during the handshake.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Both halves of the mutual authentication, in the order of the role.
async fn handshake_over<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &[u8],
    server: bool,
    legacy: bool,
) -> Result<(), ConnectError> {
    if server {
        challenge(s, key, legacy).await?;
        answer(s, key, legacy).await
    } else {
        answer(s, key, legacy).await?;
        challenge(s, key, legacy).await
    }
}

impl Stream {
    async fn handshake(
        &mut self,
        key: &[u8],
        server: bool,
        legacy: bool,
    ) -> Result<(), ConnectError> {
        match self {
            Stream::Tcp(s) => handshake_over(s, key, server, legacy).await,
            Stream::Unix(s) => handshake_over(s, key, server, legacy).await,
        }
    }

    /// The socket, back in blocking mode, for a [`Connection`].
    fn into_fd(self) -> io::Result<OwnedFd> {
        Ok(match self {
            Stream::Tcp(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                OwnedFd::from(s)
            }
            Stream::Unix(s) => {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                OwnedFd::from(s)
            }
        })
    }
}

type Handshake = Pin<Box<dyn Future<Output = Result<OwnedFd, ConnectError>> + Send>>;

enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Accepts authenticated connections (Python's `multiprocessing.connection.Listener`).
pub struct Listener {
    socket: Socket,
    address: Address,
    key: Vec<u8>,
    timeout: Duration,
    legacy: bool,
    /// Handshakes in progress: each peer gets its own, so a slow one holds up nobody.
    pending: FuturesUnordered<Handshake>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("handshakes_in_progress", &self.pending.len())
            .finish()
    }
}

impl Listener {
    /// Listens on `address` (a TCP address — port 0 picks a free one — or a unix socket
    /// path) for peers that know `authkey`.
    ///
    /// # Errors
    /// The address cannot be bound; no tokio runtime with I/O enabled.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is bound until it returns.
    pub async fn bind(address: impl Into<Address>, authkey: &[u8]) -> io::Result<Listener> {
        let (socket, address) = match address.into() {
            Address::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a).await?;
                let bound = l.local_addr()?;
                (Socket::Tcp(l), Address::Tcp(bound))
            }
            Address::Unix(p) => (
                Socket::Unix(tokio::net::UnixListener::bind(&p)?),
                Address::Unix(p),
            ),
        };
        Ok(Listener {
            socket,
            address,
            key: authkey.to_vec(),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            legacy: false,
            pending: FuturesUnordered::new(),
        })
    }

    /// The listening socket, for [`wait`] to poll.
    fn socket_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match &self.socket {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }

    /// The address it listens on (with the port chosen, for port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How long a peer has to complete the handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Also accepts peers that speak the legacy HMAC-MD5 handshake: Python 3.11 and
    /// older (Python 3.12 still accepts it from old peers). Off by default, and
    /// refused with [`AuthenticationError::LegacyDigestRefused`].
    ///
    /// It is weaker: MD5's 128 bits against SHA-256's 256, a hash with known
    /// collisions (HMAC-MD5 itself has no practical break, but it is what FIPS
    /// systems disable), and a 20-byte challenge from an old peer. Turn it on only to
    /// talk to a Python that cannot be upgraded.
    pub fn allow_legacy_digest(&mut self, allow: bool) {
        self.legacy = allow;
    }

    /// The next peer that completed the handshake, or why the next one failed.
    ///
    /// Call it in a loop: a failed peer ([`ConnectError::Authentication`],
    /// [`ConnectError::HandshakeTimeout`], garbage) is reported and dropped, and the
    /// next call goes on with the others.
    ///
    /// # Errors
    /// The handshake with one peer failed, or accepting failed.
    ///
    /// # Cancel safety
    /// Cancel safe: handshakes in progress stay in the listener.
    pub async fn accept<S, R>(&mut self) -> Result<Connection<S, R>, ConnectError> {
        loop {
            let incoming = async {
                match &self.socket {
                    Socket::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
                    Socket::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
                }
            };
            tokio::select! {
                biased;
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    return done.map(Connection::from_fd_python);
                }
                stream = incoming => {
                    let mut stream = stream?;
                    let key = self.key.clone();
                    let (timeout, legacy) = (self.timeout, self.legacy);
                    self.pending.push(Box::pin(async move {
                        let handshake = stream.handshake(&key, true, legacy);
                        match tokio::time::timeout(timeout, handshake).await {
                            Ok(Ok(())) => Ok(stream.into_fd()?),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(ConnectError::HandshakeTimeout),
                        }
                    }));
                }
            }
        }
    }
}

/// Connects to a [`Listener`], or to a Python `multiprocessing.connection.Listener`
/// (Python's `Client`).
///
/// [`Client::connect`] does it with the defaults; a `Client` value carries options.
///
/// ```no_run
/// # async fn f() -> Result<(), procpool::connection::ConnectError> {
/// use procpool::connection::{Address, Client};
///
/// let address = Address::from("127.0.0.1:6000".parse::<std::net::SocketAddr>().unwrap());
/// // A Python 3.11 listener speaks only the legacy handshake.
/// let conn: procpool::Connection<Vec<u8>> = Client::new()
///     .allow_legacy_digest(true)
///     .connect_to(&address, b"secret")
///     .await?;
/// conn.send_bytes(b"hello").await.ok();
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    legacy: bool,
    timeout: Duration,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A client with the defaults: the SHA-256 handshake only, within
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn new() -> Client {
        Client {
            legacy: false,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Also accepts a listener that speaks the legacy HMAC-MD5 handshake (Python 3.11
    /// and older); see [`Listener::allow_legacy_digest`] for why it is off by default.
    pub fn allow_legacy_digest(mut self, allow: bool) -> Client {
        self.legacy = allow;
        self
    }

    /// How long the handshake may take.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Connects to `address` and authenticates with `authkey` (both ways), with the
    /// defaults ([`Client::new`]).
    ///
    /// # Errors
    /// As [`connect_to`](Self::connect_to).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the half-made connection.
    pub async fn connect<S, R>(
        address: &Address,
        authkey: &[u8],
    ) -> Result<Connection<S, R>, ConnectError> {
        Client::new().connect_to(address, authkey).await
    }

    /// Connects to `address` and authenticates with `authkey` (both ways).
    ///
    /// # Errors
    /// [`ConnectError::Authentication`] with
    /// [`DigestSentWasRejected`](AuthenticationError::DigestSentWasRejected) when the
    /// listener has another key (or `DigestReceivedWasWrong` when it answered wrongly,
    /// `LegacyDigestRefused` when it speaks the legacy handshake and that is not
    /// allowed); an I/O error when nothing listens there.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the half-made connection.
    pub async fn connect_to<S, R>(
        &self,
        address: &Address,
        authkey: &[u8],
    ) -> Result<Connection<S, R>, ConnectError> {
        let mut stream = match address {
            Address::Tcp(a) => Stream::Tcp(tokio::net::TcpStream::connect(a).await?),
            Address::Unix(p) => Stream::Unix(tokio::net::UnixStream::connect(p).await?),
        };
        let handshake = stream.handshake(authkey, false, self.legacy);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(())) => Ok(Connection::from_fd_python(stream.into_fd()?)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::HandshakeTimeout),
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Runs our side of the handshake (legacy allowed) against a peer that sends
    /// `peer` and then closes its writing side.
    fn against(peer: &[u8], server: bool) -> Result<(), ConnectError> {
        against_with(peer, server, true)
    }

    fn against_with(peer: &[u8], server: bool, legacy: bool) -> Result<(), ConnectError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
            theirs.write_all(peer).await.expect("buffered");
            theirs.shutdown().await.expect("shut down");
            let r = handshake_over(&mut ours, b"key", server, legacy).await;
            drop(theirs);
            r
        })
    }

    fn msg(parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    proptest! {
        /// Whatever the peer sends, either role ends in a typed error (nothing random
        /// can know the key): never a panic, never a hang.
        #[test]
        fn any_bytes_from_the_peer_are_a_typed_refusal(
            garbage in proptest::collection::vec(any::<u8>(), 0..600),
            server in any::<bool>(),
        ) {
            prop_assert!(against(&garbage, server).is_err());
        }

        /// A well-formed start followed by garbage, to reach the later steps: a
        /// challenge the client answers, then a verdict or a digest that is wrong.
        #[test]
        fn a_good_start_then_garbage_is_a_typed_refusal(
            nonce in any::<[u8; NONCE_LEN]>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            server in any::<bool>(),
        ) {
            let mut peer = if server {
                // The server challenges first; the client's answer is garbage.
                Vec::new()
            } else {
                msg(&[CHALLENGE, TAG, &nonce])
            };
            peer.extend_from_slice(&garbage);
            prop_assert!(against(&peer, server).is_err());
        }

        /// A message may claim any length; more than 256 bytes is refused before
        /// anything is allocated for it.
        #[test]
        fn a_long_length_claim_is_refused_before_allocating(claim in 257u32..=u32::MAX) {
            let peer = claim.to_be_bytes();
            match against(&peer, false) {
                Err(ConnectError::Handshake(HandshakeError::TooLong)) => {}
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn the_right_key_passes_both_ways() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let (x, y) = tokio::join!(
                handshake_over(&mut a, b"k", true, false),
                handshake_over(&mut b, b"k", false, false)
            );
            assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
        });
    }

    #[test]
    fn a_bare_md5_answer_passes_only_when_legacy_is_allowed() {
        let message = [TAG, &[7u8; NONCE_LEN][..]].concat();
        let md5 = md5_of(b"k", &message).finalize().into_bytes();
        assert_eq!(check_answer(b"k", &message, &md5, true), Ok(()));
        assert_eq!(
            check_answer(b"k", &message, &md5, false),
            Err(AuthenticationError::LegacyDigestRefused)
        );
        let wrong = md5_of(b"other", &message).finalize().into_bytes();
        assert_eq!(
            check_answer(b"k", &message, &wrong, true),
            Err(AuthenticationError::DigestReceivedWasWrong)
        );
        // A SHA-256 answer is checked over the whole message, tag included.
        let sha = sha256_of(b"k", &message).finalize().into_bytes();
        let answer = [TAG, &sha[..]].concat();
        assert_eq!(check_answer(b"k", &message, &answer, false), Ok(()));
    }

    #[test]
    fn a_legacy_challenge_is_answered_only_when_allowed() {
        let peer = msg(&[CHALLENGE, &[1u8; 20]]);
        match against_with(&peer, false, false) {
            Err(ConnectError::Authentication(AuthenticationError::LegacyDigestRefused)) => {}
            other => panic!("{other:?}"),
        }
    }
}
