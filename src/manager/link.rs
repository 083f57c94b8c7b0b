//! One process's link to a manager: a connection made on first use and shared by
//! every proxy of this process for that manager, plus dedicated connections for
//! requests that wait or own something.

use super::*;

/// One process's link to a manager: the address, the key, and a connection made on
/// first use.
pub(super) struct Link {
    pub(super) address: Address,
    pub(super) key: Vec<u8>,
    conn: Mutex<Option<Connection<Request, Response>>>,
}

impl Link {
    /// The link of this process to the manager at `address` with `key`: proxies that
    /// arrive separately (each in its own message) share one link, so one connection,
    /// instead of each making its own.
    pub(super) fn new(address: Address, key: Vec<u8>) -> Arc<Link> {
        type Links = std::sync::Mutex<Vec<std::sync::Weak<Link>>>;
        static LINKS: OnceLock<Links> = OnceLock::new();
        let mut links = LINKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.strong_count() > 0);
        if let Some(l) = links
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|l| l.address == address && l.key == key)
        {
            return l;
        }
        let link = Arc::new(Link {
            address,
            key,
            conn: Mutex::new(None),
        });
        links.push(Arc::downgrade(&link));
        link
    }

    /// Sends `req` and waits for its answer.
    ///
    /// # Cancel safety
    /// The connection is taken out of the link for the call and put back only when
    /// the answer has been read: a call dropped between its request and its answer
    /// drops the connection with it, so the next call cannot read the answer meant
    /// for this one. (The manager may or may not have applied the dropped request.)
    pub(super) async fn call(&self, req: Request) -> Result<Response, ManagerError> {
        let mut slot = self.conn.lock().await;
        let c = match slot.take() {
            Some(c) => c,
            None => Client::connect(&self.address, &self.key).await?,
        };
        c.send(&req).await?;
        let r = c.recv().await?;
        *slot = Some(c);
        check(r)
    }

    pub(super) fn blocking_call(&self, req: Request) -> Result<Response, ManagerError> {
        let mut conn = self.conn.blocking_lock();
        let c = match &mut *conn {
            Some(c) => c,
            slot @ None => slot.insert(self.blocking_dedicated()?),
        };
        let r = c
            .blocking_send(&req)
            .map_err(ManagerError::from)
            .and_then(|()| c.blocking_recv().map_err(ManagerError::from));
        if r.is_err() {
            *conn = None;
        }
        check(r?)
    }
}

impl Link {
    /// A fresh connection of its own, for a request that waits (so that it holds up no
    /// other proxy of this process) or that owns something (a lock).
    pub(super) async fn dedicated(&self) -> Result<Connection<Request, Response>, ManagerError> {
        Ok(Client::connect(&self.address, &self.key).await?)
    }

    /// [`dedicated`](Self::dedicated) for blocking code. Connecting is async; one
    /// small runtime per process, made on first use, does it for every blocking caller
    /// (a current-thread runtime lets several threads `block_on` it in turn).
    pub(super) fn blocking_dedicated(&self) -> Result<Connection<Request, Response>, ManagerError> {
        static CONNECTOR: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
        let rt = CONNECTOR
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()
            })
            .as_ref()
            .ok_or(ManagerError::Disconnected)?;
        Ok(rt.block_on(Client::connect(&self.address, &self.key))?)
    }
}

pub(super) async fn ask(
    c: &Connection<Request, Response>,
    req: Request,
) -> Result<Response, ManagerError> {
    c.send(&req).await?;
    check(c.recv().await?)
}

pub(super) fn blocking_ask(
    c: &Connection<Request, Response>,
    req: Request,
) -> Result<Response, ManagerError> {
    c.blocking_send(&req)?;
    check(c.blocking_recv()?)
}

pub(super) fn check(r: Response) -> Result<Response, ManagerError> {
    match r {
        Response::Refused(why) => Err(ManagerError::Refused(why)),
        r => Ok(r),
    }
}

pub(super) fn unexpected(r: Response) -> ManagerError {
    ManagerError::Protocol(ProtocolError::Unexpected {
        what: format!("{r:?} from the manager"),
    })
}
