//! [`StateStore`] on etcd (v3 API, through the `etcd-client` crate): the store of a
//! cluster (`ferrox --cluster URL,...`).
//!
//! # Mapping
//! * Keys are stored as they are (`/ferrox/v1/<kind>/<id>`); a key's revisions are
//!   etcd's `create_revision` and `mod_revision`, and the store-wide revision is the
//!   revision in etcd's response header.
//! * A [`Txn`] is one etcd transaction: each compare is `mod_revision(key) == N`, and
//!   `N = 0` ("absent") is `version(key) == 0`. When a compare fails, the
//!   transaction's else branch reads every compared key, so the answer names a
//!   failed compare and the revision found, as redb's does. etcd refuses a
//!   transaction that writes one key twice (redb applies both in order).
//! * `watch(prefix, from)` is an etcd watch from `from` (0: from the next write). A
//!   `from` etcd has compacted answers [`StoreError::Compacted`] with the oldest
//!   revision etcd still keeps. A watch that etcd cancels later (compaction) ends in
//!   `Compacted`; one that loses its connection ends (`Ok(None)`): re-read, then
//!   watch again.
//! * Leases are etcd's (whole seconds: a TTL is rounded up, and etcd raises TTLs
//!   under its minimum, about 2 s). They survive a restart of etcd, not their TTL.
//! * etcd unreachable, timed out or without a leader: [`StoreError::Unavailable`]
//!   with etcd's reason. Every request has a deadline ([`REQUEST_TIMEOUT`]), so a
//!   lost etcd never hangs a caller.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::kv::{
    Event, EventKind, KeyValue, LeaseId, Revision, StateStore, StoreError, StoreFuture, Txn,
    TxnResponse, WatchSender, Watcher,
};
use super::Op;

/// The longest one request to etcd may take (connection included) before it
/// answers [`StoreError::Unavailable`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on idle connections: a dead etcd is noticed within about twice this.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Events a watcher may leave undelivered before it is cancelled.
const WATCH_BUFFER: usize = 1024;
/// The largest response read (a `range` of every record of a kind).
const MAX_RESPONSE: usize = 64 << 20;

/// [`StateStore`] on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Checks one `--cluster` endpoint: `http://HOST:PORT` (TLS to etcd is not
/// supported yet).
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| match url.split_once("://") {
            Some(("https", _)) => "https is not supported yet: use http://HOST:PORT".to_string(),
            Some((scheme, _)) => format!("scheme {scheme:?}: expected http://HOST:PORT"),
            None => "expected http://HOST:PORT".to_string(),
        })?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or("no port: expected http://HOST:PORT")?;
    if host.is_empty() || host.contains('/') {
        return Err("expected http://HOST:PORT".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?}: expected 1 to 65535")),
    }
}

fn unavailable(during: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |e| {
        let lease_gone = match &e {
            etcd_client::Error::GRpcStatus(s) => {
                s.code() == tonic::Code::NotFound && s.message().contains("lease not found")
            }
            etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
            _ => false,
        };
        if lease_gone {
            // The caller knows which lease; see `lease_error`.
            return StoreError::LeaseNotFound(0);
        }
        StoreError::Unavailable {
            during,
            source: reason(e).into(),
        }
    }
}

/// etcd's answer in words: the status message and its deepest cause ("tcp connect
/// error: Connection refused (os error 111)"), not the client's debug dump.
fn reason(e: etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(s) = &e else {
        return e.to_string();
    };
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(s);
    while let Some(next) = root.and_then(|r| r.source()) {
        root = Some(next);
    }
    match root {
        Some(r) => format!("etcd: {}: {r}", s.message()),
        None => format!("etcd: {} ({:?})", s.message(), s.code()),
    }
}

/// `unavailable`, naming lease `id` when etcd does not know it.
fn lease_error(during: &'static str, id: LeaseId) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |e| match unavailable(during)(e) {
        StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(id),
        e => e,
    }
}

/// A deadline on a request, on top of the channel's own.
async fn timed<T>(
    during: &'static str,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Unavailable {
            during,
            source: format!("etcd did not answer within {REQUEST_TIMEOUT:?} ({e})").into(),
        }),
    }
}

/// Whether `e` says the request never left this process: no connection to the
/// endpoint the balancer picked (a member that is down). Such a request is safe to
/// send again, whatever it was.
fn not_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Attempts at a request that was not sent ([`not_sent`]).
const SEND_ATTEMPTS: usize = 8;

/// Runs `f` again while its request was not sent: the balancer spreads requests over
/// every endpoint, down members included, so with one member down a request may go
/// to it; the next attempt picks again. Bounded by [`SEND_ATTEMPTS`] (and by the
/// caller's [`timed`]).
async fn sent<T, Fut>(mut f: impl FnMut() -> Fut) -> Result<T, etcd_client::Error>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if not_sent(&e) && attempt < SEND_ATTEMPTS => {
                attempt += 1;
                // A short pause lets the balancer see the failed connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

fn rev(r: i64) -> Revision {
    Revision::try_from(r).unwrap_or(0)
}

fn etcd_rev(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn kv(k: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = std::str::from_utf8(k.key()).map_err(|e| StoreError::Corrupt {
        what: format!("key {:?}", String::from_utf8_lossy(k.key())),
        why: format!("not UTF-8: {e}"),
    })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: k.value().to_vec(),
        create_revision: rev(k.create_revision()),
        mod_revision: rev(k.mod_revision()),
        lease: (k.lease() != 0).then(|| k.lease() as LeaseId),
    })
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, |h| rev(h.revision()))
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` and checks that it answers (a
    /// read), so a wrong address or a stopped etcd is an error now, not at the
    /// first request.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable {
                during: "connecting to etcd",
                source: "no endpoint given".into(),
            });
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = timed("connecting to etcd", async {
            Client::connect(endpoints, Some(opts))
                .await
                .map_err(unavailable("connecting to etcd"))
        })
        .await?;
        let me = Self {
            client,
            endpoints: endpoints.to_vec(),
        };
        me.range(super::PREFIX).await.map_err(|e| match e {
            StoreError::Unavailable { source, .. } => StoreError::Unavailable {
                during: "reaching etcd",
                source,
            },
            e => e,
        })?;
        Ok(me)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn txn_inner(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c.mod_revision {
                0 => EtcdCompare::version(c.key.as_str(), CompareOp::Equal, 0),
                r => EtcdCompare::mod_revision(c.key.as_str(), CompareOp::Equal, etcd_rev(r)),
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut o = PutOptions::new().with_prev_key();
                    if let Some(l) = lease {
                        o = o.with_lease(*l as i64);
                    }
                    TxnOp::put(key.as_str(), value.clone(), Some(o))
                }
                Op::Delete { key } => {
                    TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()))
                }
            })
            .collect();
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(c.key.as_str(), Some(GetOptions::new().with_keys_only())))
            .collect();
        let lease = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let etxn = EtcdTxn::new().when(compares).and_then(ops).or_else(reads);
        let r = sent(|| {
            let (mut kvc, t) = (self.client.kv_client(), etxn.clone());
            async move { kvc.txn(t).await }
        })
        .await
        .map_err(|e| match unavailable("a transaction")(e) {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease.unwrap_or(0)),
            e => e,
        })?;
        let revision = header_rev(r.header());
        if !r.succeeded() {
            // The else branch read every compared key, in the compares' order.
            let found = r.op_responses();
            for (c, resp) in txn.compares.iter().zip(&found) {
                let actual = match resp {
                    TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |k| rev(k.mod_revision())),
                    _ => 0,
                };
                if actual != c.mod_revision {
                    return Err(StoreError::Conflict {
                        key: c.key.clone(),
                        expected: c.mod_revision,
                        actual,
                    });
                }
            }
            let c = txn.compares.first();
            return Err(StoreError::Conflict {
                key: c.map(|c| c.key.clone()).unwrap_or_default(),
                expected: c.map_or(0, |c| c.mod_revision),
                actual: 0,
            });
        }
        let mut prev = Vec::with_capacity(txn.ops.len());
        for resp in r.op_responses() {
            let p = match &resp {
                TxnOpResponse::Put(p) => p.prev_key().map(kv).transpose()?,
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(kv).transpose()?,
                _ => None,
            };
            prev.push(p);
        }
        Ok(TxnResponse { revision, prev })
    }

    /// Whether revision `from` is compacted: a read at it says so at once, where a
    /// watch is created first and cancelled after.
    async fn compacted(&self, prefix: &str, from: Revision) -> Result<bool, StoreError> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_revision(etcd_rev(from));
        let r = sent(|| {
            let (mut kvc, o) = (self.client.kv_client(), opts.clone());
            async move { kvc.get(prefix, Some(o)).await }
        })
        .await;
        match r {
            Ok(_) => Ok(false),
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::OutOfRange => {
                // "required revision has been compacted", or "is a future revision"
                // (a watch from the next revision).
                Ok(s.message().contains("compacted"))
            }
            Err(e) => Err(unavailable("starting a watch")(e)),
        }
    }

    async fn watch_inner(&self, prefix: &str, from: Revision) -> Result<Watcher, StoreError> {
        let compacted = from > 0 && self.compacted(prefix, from).await?;
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(etcd_rev(from));
        let mut stream = sent(|| {
            let (mut wc, o) = (self.client.watch_client(), opts.clone());
            async move { wc.watch(prefix, Some(o)).await }
        })
        .await
        .map_err(unavailable("starting a watch"))?;
        // The first answer says whether the watch was created.
        let first = stream
            .message()
            .await
            .map_err(unavailable("starting a watch"))?
            .ok_or_else(|| StoreError::Unavailable {
                during: "starting a watch",
                source: "etcd closed the watch stream".into(),
            })?;
        let mut first = first;
        if compacted {
            // etcd cancels it after creating it, naming the oldest revision it keeps.
            while !first.canceled() {
                first = stream
                    .message()
                    .await
                    .map_err(unavailable("starting a watch"))?
                    .ok_or_else(|| StoreError::Unavailable {
                        during: "starting a watch",
                        source: "etcd closed the watch stream".into(),
                    })?;
            }
        }
        if first.canceled() {
            if first.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest: rev(first.compact_revision()),
                });
            }
            return Err(StoreError::Unavailable {
                during: "starting a watch",
                source: format!("etcd cancelled it: {}", first.cancel_reason()).into(),
            });
        }
        let start = if from == 0 {
            header_rev(first.header()) + 1
        } else {
            from
        };
        let (tx, w) = Watcher::channel(WATCH_BUFFER, start);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            // Events that came with the creation answer (none, in practice).
            if !forward(&tx, &first) {
                return;
            }
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                match msg {
                    Ok(Some(m)) => {
                        if m.canceled() {
                            if m.compact_revision() > 0 {
                                tx.set_lagged();
                            }
                            tracing::debug!(
                                prefix,
                                reason = m.cancel_reason(),
                                "etcd cancelled a watch"
                            );
                            return;
                        }
                        if !forward(&tx, &m) {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(prefix, error = %e, "an etcd watch ended");
                        return;
                    }
                }
            }
        });
        Ok(w)
    }

    async fn lease_keep_alive_inner(&self, id: LeaseId) -> Result<Duration, StoreError> {
        // `keep_alive` renews once (and fails for a lease etcd does not have); the
        // second renewal answers the TTL.
        let (mut keeper, mut stream) = sent(|| {
            let mut lc = self.client.lease_client();
            async move { lc.keep_alive(id as i64).await }
        })
        .await
        .map_err(lease_error("renewing a lease", id))?;
        keeper
            .keep_alive()
            .await
            .map_err(lease_error("renewing a lease", id))?;
        let r = stream
            .message()
            .await
            .map_err(lease_error("renewing a lease", id))?
            .ok_or_else(|| StoreError::Unavailable {
                during: "renewing a lease",
                source: "etcd closed the keep-alive stream".into(),
            })?;
        // etcd answers TTL 0 for a lease it does not have.
        if r.ttl() <= 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(Duration::from_secs(r.ttl() as u64))
    }
}

/// Sends `m`'s events to the watcher; false when the watch is over.
fn forward(tx: &WatchSender, m: &etcd_client::WatchResponse) -> bool {
    for e in m.events() {
        let Some(k) = e.kv() else { continue };
        let Ok(mut kv) = kv(k) else {
            tracing::warn!(key = %String::from_utf8_lossy(k.key()), "a watch skipped a key that is not UTF-8");
            continue;
        };
        let kind = match e.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => {
                kv.create_revision = 0;
                kv.lease = None;
                kv.value.clear();
                EventKind::Delete
            }
        };
        if !tx.send(Event { kind, kv }) {
            return false;
        }
    }
    true
}

impl StateStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(timed("get", async move {
            let r = sent(|| {
                let mut kvc = self.client.kv_client();
                async move { kvc.get(key, None).await }
            })
            .await
            .map_err(unavailable("get"))?;
            r.kvs().first().map(kv).transpose()
        }))
    }

    fn range<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, (Vec<KeyValue>, Revision)> {
        Box::pin(timed("range", async move {
            let r = sent(|| {
                let mut kvc = self
                    .client
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE);
                async move { kvc.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map_err(unavailable("range"))?;
            let kvs = r.kvs().iter().map(kv).collect::<Result<Vec<_>, _>>()?;
            Ok((kvs, header_rev(r.header())))
        }))
    }

    fn txn(&self, txn: Txn) -> StoreFuture<'_, TxnResponse> {
        Box::pin(timed("a transaction", self.txn_inner(txn)))
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> StoreFuture<'a, Watcher> {
        Box::pin(timed("starting a watch", self.watch_inner(prefix, from)))
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, LeaseId> {
        Box::pin(timed("granting a lease", async move {
            let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
            let r = sent(|| {
                let mut lc = self.client.lease_client();
                async move { lc.grant(secs, None).await }
            })
            .await
            .map_err(unavailable("granting a lease"))?;
            Ok(r.id() as LeaseId)
        }))
    }

    fn lease_keep_alive(&self, id: LeaseId) -> StoreFuture<'_, Duration> {
        Box::pin(timed("renewing a lease", self.lease_keep_alive_inner(id)))
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(timed("revoking a lease", async move {
            sent(|| {
                let mut lc = self.client.lease_client();
                async move { lc.revoke(id as i64).await }
            })
            .await
            .map_err(lease_error("revoking a lease", id))?;
            Ok(())
        }))
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
