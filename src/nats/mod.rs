//! What submitters and hosts of a NATS JetStream pool agree on: the options, the
//! subjects, the headers a task and its reply carry, the reply's body, and the task
//! registry. The submitting back end is `pool::remote`; the host is `crate::remote`.
//!
//! # Layout on the server
//! - Stream `PROCPOOL_<pool>`, work-queue retention, file storage, subjects
//!   `procpool.<pool>.tasks.>`.
//! - A task is published to `procpool.<pool>.tasks.<fingerprint>`: the build
//!   fingerprint in the subject means a host only ever sees tasks of its own build, so
//!   a fleet in the middle of a rolling upgrade keeps working (each build's hosts serve
//!   that build's submitters).
//! - Hosts of one build share the durable pull consumer `hosts-<fingerprint>`, with
//!   explicit acks.
//! - Replies go to the submitting executor's own subject,
//!   `procpool.<pool>.replies.<executor>`, over core NATS, and are matched by task id.
//! - Cancels go to `procpool.<pool>.control.<fingerprint>`, over core NATS, naming a
//!   task by its reply subject and id; the host running it kills its worker.

pub(crate) mod registry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CodecError, Error, Exit, PanicInfo, RemoteTaskError, TaskError};

/// Where and how to reach a NATS JetStream pool: the server's URL, the pool's name,
/// and the delivery settings of its stream.
///
/// ```
/// use std::time::Duration;
/// let options = procpool::remote::NatsOptions::new("nats://127.0.0.1:4222")
///     .pool("thumbs")
///     .ack_wait(Duration::from_secs(30));
/// assert_eq!(options.pool_name(), "thumbs");
/// ```
#[derive(Clone)]
pub struct NatsOptions {
    pub(crate) url: String,
    pub(crate) pool: String,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    auth: Auth,
    tls: Tls,
    /// A credentials file (`.creds`: a JWT and an nkey seed).
    credentials: Option<PathBuf>,
    /// Anything else `async_nats::ConnectOptions` can say.
    configure: Option<Configure>,
}

/// A change to the connect options made by the user.
type Configure =
    Arc<dyn Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions + Send + Sync>;

/// TLS settings, passed to `async_nats::ConnectOptions`.
#[derive(Clone, Debug, Default)]
struct Tls {
    required: bool,
    roots: Vec<PathBuf>,
    /// (certificate, key), PEM files.
    client: Option<(PathBuf, PathBuf)>,
}

/// How to prove who we are to the server.
#[derive(Clone)]
enum Auth {
    None,
    UserPassword(String, String),
    Token(String),
}

/// Without the secrets.
impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::UserPassword(..) => "user and password",
            Auth::Token(_) => "token",
        };
        f.debug_struct("NatsOptions")
            .field("url", &self.url)
            .field("pool", &self.pool)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("auth", &auth)
            .field("tls", &self.tls)
            .field("credentials", &self.credentials)
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

impl NatsOptions {
    /// A pool named `default` on the server at `url` (`nats://host:port`), with an
    /// ack wait of 30 s and at most 3 deliveries of a task.
    pub fn new(url: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            pool: "default".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 3,
            auth: Auth::None,
            tls: Tls::default(),
            credentials: None,
            configure: None,
        }
    }

    /// Refuses to talk to the server without TLS (a `tls://` URL requires it too).
    pub fn require_tls(mut self, required: bool) -> NatsOptions {
        self.tls.required = required;
        self
    }

    /// Trusts the certificate authorities in this PEM file for the server's
    /// certificate (besides the system's own). May be given more than once.
    pub fn tls_root_certificate(mut self, pem: impl Into<PathBuf>) -> NatsOptions {
        self.tls.roots.push(pem.into());
        self
    }

    /// Proves who we are with this client certificate and key (PEM files), for a
    /// server that verifies clients (`--tlsverify`).
    pub fn tls_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> NatsOptions {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// Authenticates with a credentials file (`.creds`, a user JWT and its nkey seed,
    /// as `nsc` writes them). It is read at each connect.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> NatsOptions {
        self.credentials = Some(path.into());
        self
    }

    /// Changes the `async_nats::ConnectOptions` in any other way (nkeys, a TLS client
    /// configuration of your own, reconnect settings, a name), after everything else
    /// here is applied. Called at each connect: by the submitting executor, and by a
    /// host.
    ///
    /// ```
    /// let options = procpool::remote::NatsOptions::new("tls://nats.internal:4222")
    ///     .configure(|o| o.name("thumbnail-submitter").tls_first());
    /// # let _ = options;
    /// ```
    pub fn configure(
        mut self,
        f: impl Fn(async_nats::ConnectOptions) -> async_nats::ConnectOptions + Send + Sync + 'static,
    ) -> NatsOptions {
        self.configure = Some(Arc::new(f));
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> NatsOptions {
        self.auth = Auth::UserPassword(user.into(), password.into());
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> NatsOptions {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Connects to the server with these options' credentials.
    pub(crate) async fn connect(&self) -> Result<async_nats::Client, Error> {
        let mut options = async_nats::ConnectOptions::new();
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword(u, p) => options = options.user_and_password(u.clone(), p.clone()),
            Auth::Token(t) => options = options.token(t.clone()),
        }
        if let Some(path) = &self.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| Error::Remote {
                    what: "read the credentials file",
                    reason: format!("{}: {e}", path.display()),
                })?;
        }
        if self.tls.required {
            options = options.require_tls(true);
        }
        for root in &self.tls.roots {
            options = options.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(f) = &self.configure {
            options = f(options);
        }
        options
            .connect(self.url.as_str())
            .await
            .map_err(|e| Error::Remote {
                what: "connect",
                reason: e.to_string(),
            })
    }

    /// The pool's name: submitters and hosts with the same name share work. Letters,
    /// digits, `-` and `_` only (it is part of subject and stream names).
    pub fn pool(mut self, name: impl Into<String>) -> NatsOptions {
        self.pool = name.into();
        self
    }

    /// How long the server waits for a host's ack (or progress) before it delivers the
    /// task again elsewhere. Hosts send progress every third of it while a task runs.
    pub fn ack_wait(mut self, wait: Duration) -> NatsOptions {
        self.ack_wait = wait;
        self
    }

    /// How many times a task is delivered at most: a host that dies under it, or a
    /// worker that crashes under it, costs one delivery; after the last, the task
    /// fails with [`RemoteTaskError::RetriesExhausted`].
    pub fn max_deliver(mut self, n: u32) -> NatsOptions {
        self.max_deliver = i64::from(n);
        self
    }

    /// The pool's name.
    pub fn pool_name(&self) -> &str {
        &self.pool
    }

    /// Refuses a pool name that cannot be part of a subject, and settings out of range.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let name_ok = !self.pool.is_empty()
            && self
                .pool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(Error::InvalidConfig {
                what: "the NATS pool name must be letters, digits, '-' or '_'",
            });
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::InvalidConfig {
                what: "the NATS ack wait must be at least 100 ms",
            });
        }
        if self.max_deliver < 1 {
            return Err(Error::InvalidConfig {
                what: "the NATS max deliver must be at least 1",
            });
        }
        let twice = registry::duplicates();
        if !twice.is_empty() {
            return Err(Error::InvalidConfig {
                what: "a remote task name is registered twice in this build",
            });
        }
        Ok(())
    }

    pub(crate) fn stream(&self) -> String {
        format!("PROCPOOL_{}", self.pool)
    }

    pub(crate) fn task_subjects(&self) -> String {
        format!("procpool.{}.tasks.>", self.pool)
    }

    pub(crate) fn task_subject(&self, fingerprint: u64) -> String {
        format!("procpool.{}.tasks.{fingerprint:016x}", self.pool)
    }

    pub(crate) fn consumer(&self, fingerprint: u64) -> String {
        format!("hosts-{fingerprint:016x}")
    }

    pub(crate) fn control_subject(&self, fingerprint: u64) -> String {
        format!("procpool.{}.control.{fingerprint:016x}", self.pool)
    }

    pub(crate) fn reply_subject(&self, executor: &str) -> String {
        format!("procpool.{}.replies.{executor}", self.pool)
    }
}

/// Makes sure the pool's task stream exists (work-queue retention, file storage), as
/// submitters and hosts both do before anything else.
pub(crate) async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    options: &NatsOptions,
) -> Result<async_nats::jetstream::stream::Stream, Error> {
    use async_nats::jetstream::stream;
    js.get_or_create_stream(stream::Config {
        name: options.stream(),
        subjects: vec![options.task_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Remote {
        what: "create the task stream",
        reason: e.to_string(),
    })
}

/// Header names a task message carries.
pub(crate) mod header {
    /// Makes a repeated publish of the same task a no-op within the dedup window.
    pub(crate) const MSG_ID: &str = "Nats-Msg-Id";
    /// The registered name of the task.
    pub(crate) const TASK: &str = "Procpool-Task";
    /// `call` or `batch` (see `registry::Shape`).
    pub(crate) const SHAPE: &str = "Procpool-Shape";
    /// The task's id within its executor.
    pub(crate) const ID: &str = "Procpool-Id";
    /// Where the reply goes (with `ID`, also what names a task in a cancel).
    pub(crate) const REPLY: &str = "Procpool-Reply";
    /// The task's time limit on the host, in milliseconds, from when it begins.
    pub(crate) const TIMEOUT_MS: &str = "Procpool-Timeout-Ms";
    /// Items in a `map` chunk, for the host's statistics.
    pub(crate) const ITEMS: &str = "Procpool-Items";
}

/// The body of a reply: the task's encoded result as a local worker returned it, or
/// why there is none.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The local worker's reply body: the encoded result (for a `map` chunk, each
    /// item's result back to back, and how many of them returned a value or
    /// panicked, for the submitter's statistics).
    Done {
        body: Vec<u8>,
        ok: u32,
        panicked: u32,
    },
    /// The task produced no reply on the host.
    Failed(Failed),
}

/// A host-side failure, as it travels.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failed {
    Panicked(PanicInfo),
    WorkerDied {
        code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut {
        after_ms: u64,
    },
    Cancelled,
    Encode(CodecError),
    Decode(CodecError),
    UnknownTask {
        name: String,
        host: String,
    },
    RetriesExhausted {
        attempts: u64,
        last: String,
    },
    Other(String),
}

impl Failed {
    /// What a host's local pool said, as it travels.
    pub(crate) fn from_task_error(e: TaskError) -> Failed {
        match e {
            TaskError::Panicked(p) => Failed::Panicked(p),
            TaskError::WorkerDied { exit } => Failed::WorkerDied {
                code: exit.code(),
                signal: exit.signal(),
            },
            TaskError::TimedOut { after } => Failed::TimedOut {
                after_ms: after.as_millis() as u64,
            },
            TaskError::Cancelled => Failed::Cancelled,
            TaskError::Encode(c) => Failed::Encode(c),
            TaskError::Decode(c) => Failed::Decode(c),
            other => Failed::Other(other.to_string()),
        }
    }

    /// What the submitter's task handle says.
    pub(crate) fn into_task_error(self) -> TaskError {
        match self {
            Failed::Panicked(p) => TaskError::Panicked(p),
            Failed::WorkerDied { code, signal } => TaskError::WorkerDied {
                exit: match (code, signal) {
                    (_, Some(s)) => Exit::Signal(s),
                    (Some(c), None) => Exit::Code(c),
                    (None, None) => Exit::Code(-1),
                },
            },
            Failed::TimedOut { after_ms } => TaskError::TimedOut {
                after: Duration::from_millis(after_ms),
            },
            Failed::Cancelled => TaskError::Cancelled,
            Failed::Encode(c) => TaskError::Encode(c),
            Failed::Decode(c) => TaskError::Decode(c),
            Failed::UnknownTask { name, host } => {
                TaskError::Remote(RemoteTaskError::UnknownTask { name, host })
            }
            Failed::RetriesExhausted { attempts, last } => {
                TaskError::Remote(RemoteTaskError::RetriesExhausted { attempts, last })
            }
            Failed::Other(reason) => TaskError::Remote(RemoteTaskError::Host { reason }),
        }
    }
}
