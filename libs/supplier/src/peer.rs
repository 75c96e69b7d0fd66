//! The supplier side of the peer protocol (`proto/bitdust/peer/v1`): one
//! request per QUIC stream, from a customer whose node id the TLS handshake
//! proved. Every request is size-limited and validated; a bad one gets an
//! error on its stream and nothing else happens.

use std::sync::Arc;

use bitdust_crypto::NodeId;
use bitdust_net::frame::{self, FrameError};
use bitdust_net::places::{Full, Place, Places};
use bitdust_net::{Connection, Endpoint, RecvStream, SendStream};
use bitdust_proto::peer::v1 as pb;
use bitdust_proto::peer::v1::{request, response};

use crate::store::{CustomerRecord, PutTicket, Store, StoreError};

/// ALPN of the peer protocol, version 1.
pub const ALPN: &[u8] = b"bitdust/peer/1";

/// Largest request frame a supplier reads (a delete lists at most 1000 names).
pub const MAX_REQUEST: usize = 300 * 1024;

/// Connections other nodes hold open to a supplier at most; beyond it a
/// new one is closed as soon as its handshake completes. With
/// [`bitdust_net::CONNECTION_WINDOW`] and the per-connection limits below,
/// it bounds what peers can make a supplier hold.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections from one source address (an IPv4 address or an IPv6 /64)
/// at most, so that one host cannot take every place: node ids cost
/// nothing.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// The application close code of a connection over the caps.
pub const CLOSE_BUSY: u32 = 3;

/// The connections a supplier serves, counted per source address (for
/// the caps and its status).
#[derive(Clone, Debug)]
pub struct Connections(Places<String>);

impl Default for Connections {
    fn default() -> Self {
        Connections(Places::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS))
    }
}

impl Connections {
    /// Connections served now.
    pub fn open(&self) -> usize {
        self.0.held()
    }

    /// Connections closed at a cap since the supplier started.
    pub fn refused(&self) -> u64 {
        self.0.refused()
    }

    /// A place for a connection from `from`, or why there is none.
    fn take(&self, from: std::net::IpAddr) -> Result<Place<String>, &'static [u8]> {
        self.0
            .take(bitdust_dht::store::address_key(from))
            .map_err(|full| match full {
                Full::Total => {
                    &b"the supplier serves as many connections as it can; try again later"[..]
                }
                Full::PerKey => {
                    b"the supplier serves as many connections from your address as it allows"
                }
            })
    }
}

/// Accepts connections until the endpoint closes, serving each on its own
/// task while [`Connections`] has a place for it.
pub async fn serve(endpoint: Endpoint, store: Arc<Store>, connections: Connections) {
    let committer = Committer::start(store.clone());
    while let Some((conn, peer)) = endpoint.accept().await {
        tracing::debug!(%peer, remote = %conn.remote_address(), "peer connected");
        // A customer through a router counts at the address the router
        // sees it at, not at its stand-in address.
        let from = endpoint.source_of(&conn).ip();
        let place = match connections.take(from) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(%peer, %from, "connection over the caps closed");
                conn.close(CLOSE_BUSY.into(), why);
                continue;
            }
        };
        let (store, committer) = (store.clone(), committer.clone());
        tokio::spawn(async move {
            serve_connection(conn, peer, from, store, committer).await;
            drop(place);
        });
    }
}

/// Puts whose payloads have landed at most, made durable in one group.
const MAX_GROUP: usize = 64;

type Committed = tokio::sync::oneshot::Sender<Result<CustomerRecord, StoreError>>;

/// The thread that makes landed puts durable: it takes every put waiting
/// when it is free and commits them together ([`Store::finish_puts`]), so
/// puts that arrive while one commits share the next commit's fsyncs.
#[derive(Clone)]
struct Committer {
    to: std::sync::mpsc::Sender<(PutTicket, Committed)>,
    store: Arc<Store>,
}

impl Committer {
    fn start(store: Arc<Store>) -> Committer {
        let (tx, rx) = std::sync::mpsc::channel::<(PutTicket, Committed)>();
        let theirs = store.clone();
        let run = move || {
            while let Ok(first) = rx.recv() {
                let mut group = vec![first];
                group.extend(rx.try_iter().take(MAX_GROUP - 1));
                let (tickets, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                // A panic fails this group's puts, not every later one:
                // what it left half done is cleaned up at the next start.
                let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    theirs.finish_puts(tickets)
                }))
                .unwrap_or_else(|_| {
                    tracing::error!("committing a group of puts panicked");
                    Vec::new()
                });
                let mut results = results.into_iter();
                for answer in answers {
                    let _ = answer.send(results.next().unwrap_or_else(|| {
                        Err(StoreError::Internal("committing the put failed".into()))
                    }));
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("put-commit".into())
            .spawn(run)
        {
            // Without the thread every put gets an error back (the channel
            // is closed) and the supplier keeps serving the rest.
            tracing::error!(error = %e, "cannot start the thread that commits puts");
        }
        Committer { to: tx, store }
    }

    /// Makes `ticket`'s landed payload durable and indexed.
    async fn commit(&self, ticket: PutTicket) -> Result<CustomerRecord, StoreError> {
        let stopped = || StoreError::Internal("the put committer has stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(std::sync::mpsc::SendError((ticket, _))) = self.to.send((ticket, tx)) {
            self.store.abort_put(ticket);
            return Err(stopped());
        }
        rx.await.map_err(|_| stopped())?
    }
}

/// Puts of one connection whose payloads land at once at most; more wait
/// (their bytes wait in QUIC's stream window), so one customer's puts hold
/// at most this many [`WRITE_BATCH`] buffers and nobody else's wait. Gets
/// that send at once are held to as many.
pub const LANDING_PER_CONNECTION: usize = 16;

/// What the streams of one connection share.
#[derive(Clone)]
struct Shared {
    committer: Committer,
    landing: Arc<tokio::sync::Semaphore>,
    /// Gets of the connection sending at once, at most
    /// [`LANDING_PER_CONNECTION`]: each holds a [`WRITE_BATCH`] buffer
    /// while QUIC has no room for it.
    sending: Arc<tokio::sync::Semaphore>,
    /// Requests of the connection being read at once, at most
    /// [`LANDING_PER_CONNECTION`]: each may hold a [`MAX_REQUEST`] buffer
    /// until its frame is whole.
    reading: Arc<tokio::sync::Semaphore>,
}

async fn serve_connection(
    conn: Connection,
    peer: NodeId,
    from: std::net::IpAddr,
    store: Arc<Store>,
    committer: Committer,
) {
    let shared = Shared {
        committer,
        landing: Arc::new(tokio::sync::Semaphore::new(LANDING_PER_CONNECTION)),
        sending: Arc::new(tokio::sync::Semaphore::new(LANDING_PER_CONNECTION)),
        reading: Arc::new(tokio::sync::Semaphore::new(LANDING_PER_CONNECTION)),
    };
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(
                    send,
                    recv,
                    peer,
                    from,
                    store.clone(),
                    shared.clone(),
                ));
            }
            Err(e) => {
                tracing::debug!(%peer, reason = %e, "peer connection ended");
                return;
            }
        }
    }
}

fn error(code: pb::ErrorCode, message: impl Into<String>) -> pb::Response {
    pb::Response {
        kind: Some(response::Kind::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

fn store_error(e: &StoreError) -> pb::Response {
    use pb::ErrorCode as C;
    let code = match e {
        StoreError::BadRequest(_) => C::BadRequest,
        StoreError::NotACustomer(_) => C::NotACustomer,
        StoreError::Refused(_) => C::Refused,
        StoreError::QuotaExceeded { .. } => C::QuotaExceeded,
        StoreError::DiskFull => C::DiskFull,
        StoreError::NotFound(_) => C::NotFound,
        StoreError::Corrupt(_) => C::Corrupt,
        StoreError::Internal(_) => C::Internal,
    };
    error(code, e.to_string())
}

fn reply(kind: response::Kind) -> pb::Response {
    pb::Response { kind: Some(kind) }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("a storage task failed: {e}")))?
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: NodeId,
    from: std::net::IpAddr,
    store: Arc<Store>,
    shared: Shared,
) {
    let Ok(reading) = shared.reading.acquire().await else {
        return;
    };
    let read = frame::read_frame(&mut recv, MAX_REQUEST).await;
    drop(reading);
    let req: pb::Request = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%peer, error = %e, "bad request from peer");
            let _ = recv.stop(1u32.into());
            let _ = finish(&mut send, &error(pb::ErrorCode::BadRequest, e.to_string())).await;
            return;
        }
    };
    let Some(kind) = req.kind else {
        let _ = finish(
            &mut send,
            &error(
                pb::ErrorCode::BadRequest,
                "an empty request; say what you want",
            ),
        )
        .await;
        return;
    };
    let resp = match kind {
        request::Kind::Put(put) => {
            return serve_put(send, recv, peer, store, &shared, put).await;
        }
        request::Kind::Get(get) => {
            let Ok(_sending) = shared.sending.acquire().await else {
                return;
            };
            return serve_get(send, peer, store, get).await;
        }
        other => answer(other, peer, from, store).await,
    };
    let _ = finish(&mut send, &resp).await;
}

/// The answer to a request without a payload (every kind but put and get)
/// from customer `peer`, whose packets come from `from`: a reply, or an
/// error that says why not.
pub async fn answer(
    kind: request::Kind,
    peer: NodeId,
    from: std::net::IpAddr,
    store: Arc<Store>,
) -> pb::Response {
    match handle_simple(kind, peer, from, store).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "request refused");
            store_error(&e)
        }
    }
}

async fn finish(send: &mut SendStream, resp: &pb::Response) -> Result<(), FrameError> {
    frame::write_frame(send, resp).await?;
    send.finish().map_err(|e| FrameError::Io(e.to_string()))
}

fn usage(rec: &CustomerRecord) -> (u64, u64) {
    (rec.used, rec.quota)
}

async fn handle_simple(
    kind: request::Kind,
    peer: NodeId,
    from: std::net::IpAddr,
    store: Arc<Store>,
) -> Result<pb::Response, StoreError> {
    match kind {
        request::Kind::RequestService(r) => {
            let rec =
                blocking(move || store.request_service(&peer, r.needed_bytes, r.suppliers, from))
                    .await?;
            tracing::info!(%peer, quota = rec.quota, "storage service granted");
            Ok(reply(response::Kind::ServiceAccepted(
                pb::ServiceAccepted {
                    quota_bytes: rec.quota,
                    used_bytes: rec.used,
                },
            )))
        }
        request::Kind::CancelService(_) => {
            let n = blocking(move || store.cancel_service(&peer)).await?;
            tracing::info!(%peer, objects = n, "storage service cancelled; objects deleted");
            Ok(reply(response::Kind::ServiceCancelled(
                pb::ServiceCancelled { objects_deleted: n },
            )))
        }
        request::Kind::List(l) => {
            let (objects, truncated) =
                blocking(move || store.list(&peer, &l.prefix, &l.start_after, l.limit as usize))
                    .await?;
            Ok(reply(response::Kind::List(pb::ListReply {
                objects: objects
                    .into_iter()
                    .map(|(name, o)| pb::ObjectInfo {
                        name,
                        size: o.size,
                        blake3: o.hash.to_vec(),
                    })
                    .collect(),
                truncated,
            })))
        }
        request::Kind::Delete(d) => {
            if d.names.len() > crate::store::MAX_LIST {
                return Err(StoreError::BadRequest(format!(
                    "a delete names at most {} objects",
                    crate::store::MAX_LIST
                )));
            }
            let (n, rec) = blocking(move || store.delete(&peer, &d.names, &d.prefix)).await?;
            Ok(reply(response::Kind::Deleted(pb::DeleteDone {
                deleted: n,
                used_bytes: rec.used,
            })))
        }
        request::Kind::Audit(a) => {
            let proof = blocking(move || store.audit(&peer, &a.name, &a.nonce)).await?;
            Ok(reply(response::Kind::Audit(pb::AuditProof {
                blake3: proof.to_vec(),
            })))
        }
        request::Kind::Ping(_) => {
            let (used, quota) = store.customer(&peer)?.as_ref().map_or((0, 0), usage);
            Ok(reply(response::Kind::Pong(pb::Pong {
                used_bytes: used,
                quota_bytes: quota,
            })))
        }
        request::Kind::Put(_) | request::Kind::Get(_) => Err(StoreError::Internal(
            "put and get are served elsewhere".into(),
        )),
    }
}

async fn serve_put(
    mut send: SendStream,
    mut recv: RecvStream,
    peer: NodeId,
    store: Arc<Store>,
    shared: &Shared,
    put: pb::PutObject,
) {
    let ticket = match store.begin_put(&peer, &put.name, put.size, &put.blake3) {
        Ok(t) => t,
        Err(e) => {
            // Tell the sender to stop sending the payload, then why.
            let _ = recv.stop(2u32.into());
            let _ = finish(&mut send, &store_error(&e)).await;
            return;
        }
    };
    let received = match shared.landing.acquire().await {
        Ok(_landing) => receive_payload(&mut recv, &ticket.tmp_path, put.size, &put.blake3).await,
        Err(_) => Err(StoreError::Internal("the connection is closing".into())),
    };
    let resp = match received {
        Ok(()) => match shared.committer.commit(ticket).await {
            Ok(rec) => reply(response::Kind::PutDone(pb::PutDone {
                used_bytes: rec.used,
                quota_bytes: rec.quota,
            })),
            Err(e) => {
                tracing::warn!(%peer, name = %put.name, error = %e, "put failed");
                store_error(&e)
            }
        },
        Err(e) => {
            tracing::info!(%peer, name = %put.name, error = %e, "put refused");
            let _ = recv.stop(3u32.into());
            store.abort_put(ticket);
            store_error(&e)
        }
    };
    let _ = finish(&mut send, &resp).await;
}

/// Payload bytes a put gathers from the connection before they go to its
/// file, hashed and written in one blocking call: each hand-over to a
/// blocking thread costs two context switches, and with 64 KiB writes it
/// was 16 per MiB received.
const WRITE_BATCH: usize = 512 * 1024;

/// A put's file as it is written: the open file (from the first batch on),
/// the hash so far, and the batch buffer, handed to a blocking thread and
/// back for each batch.
struct Landing {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    hasher: blake3::Hasher,
    batch: Vec<u8>,
}

impl Landing {
    /// Hashes the batch and appends it to the file (creating it first).
    fn write_batch(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.hasher.update(&self.batch);
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::create(&self.path)?),
        };
        file.write_all(&self.batch)?;
        self.batch.clear();
        Ok(())
    }
}

/// Streams exactly `size` bytes into a new file at `path`, checking the
/// hash. The store makes it durable ([`Store::finish_put`]).
async fn receive_payload(
    recv: &mut RecvStream,
    path: &std::path::Path,
    size: u64,
    hash: &[u8],
) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            StoreError::DiskFull
        } else {
            StoreError::Internal(format!("{what}: {e}"))
        }
    };
    let batch = usize::try_from(size).map_or(WRITE_BATCH, |s| s.min(WRITE_BATCH));
    let mut landing = Landing {
        path: path.to_owned(),
        file: None,
        hasher: blake3::Hasher::new(),
        batch: Vec::with_capacity(batch),
    };
    let mut got = 0u64;
    loop {
        let room = landing.batch.capacity() - landing.batch.len();
        let want = usize::try_from(size - got).map_or(room, |left| left.min(room));
        if want > 0 {
            let n = frame::read_append(recv, &mut landing.batch, want)
                .await
                .map_err(|e| StoreError::Corrupt(format!("the payload did not arrive: {e}")))?;
            if n == 0 {
                return Err(StoreError::Corrupt(format!(
                    "the payload ended after {got} of {size} bytes"
                )));
            }
            got += n as u64;
        }
        if got == size || landing.batch.len() == landing.batch.capacity() {
            let (back, written) = tokio::task::spawn_blocking(move || {
                let r = landing.write_batch();
                (landing, r)
            })
            .await
            .map_err(|e| StoreError::Internal(format!("a storage task failed: {e}")))?;
            landing = back;
            written.map_err(|e| io("writing an object", e))?;
            if got == size {
                break;
            }
        }
    }
    // Nothing may follow the payload.
    let mut extra = [0u8; 1];
    if frame::read_some(recv, &mut extra).await.unwrap_or(0) != 0 {
        return Err(StoreError::Corrupt(format!(
            "more than the declared {size} payload bytes were sent"
        )));
    }
    if landing.hasher.finalize().as_bytes().as_slice() != hash {
        return Err(StoreError::Corrupt(
            "the payload does not match its BLAKE3 hash; it was damaged in transit, send it again"
                .into(),
        ));
    }
    Ok(())
}

async fn serve_get(mut send: SendStream, peer: NodeId, store: Arc<Store>, get: pb::GetObject) {
    let (rec, path) = match store.get(&peer, &get.name) {
        Ok(x) => x,
        Err(e) => {
            let _ = finish(&mut send, &store_error(&e)).await;
            return;
        }
    };
    let opened = blocking(move || {
        std::fs::File::open(&path)
            .map_err(|e| StoreError::Internal(format!("opening an object: {e}")))
    });
    let file = match opened.await {
        Ok(f) => f,
        Err(e) => {
            let _ = finish(&mut send, &store_error(&e)).await;
            return;
        }
    };
    let head = reply(response::Kind::Get(pb::GetReply {
        size: rec.size,
        blake3: rec.hash.to_vec(),
    }));
    if frame::write_frame(&mut send, &head).await.is_err() {
        return;
    }
    let mut left = match get.prefix {
        0 => rec.size,
        n => rec.size.min(n),
    };
    let mut file = Some(file);
    while left > 0 {
        let want = left.min(WRITE_BATCH as u64);
        let Some(f) = file.take() else { return };
        // Read in one blocking call, sent as read (the connection keeps
        // the buffer until the customer has it; nothing is copied).
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = Vec::with_capacity(want as usize);
            let r = (&f).take(want).read_to_end(&mut buf);
            (f, r.map(|_| buf))
        })
        .await;
        let buf = match read {
            Ok((f, Ok(buf))) if buf.len() as u64 == want => {
                file = Some(f);
                buf
            }
            _ => {
                // The file is shorter than its record (or unreadable): reset
                // the stream, so the customer sees a failed read, not a
                // short fragment.
                tracing::error!(%peer, name = %get.name, "object file is shorter than its index entry");
                let _ = send.reset(4u32.into());
                return;
            }
        };
        if send.write_chunk(bytes::Bytes::from(buf)).await.is_err() {
            return;
        }
        left -= want;
    }
    let _ = send.finish();
}
