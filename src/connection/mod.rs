//! Client connections before HTTP: how many may be open (overall and per client),
//! and request heads that must arrive whole, in time and within a size limit
//! ([`head`]). [`GuardedApp`] wraps the proxy's pingora app and applies both to every
//! accepted connection.

pub(crate) mod head;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use ipnet::IpNet;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt as _;

use crate::response::LocalResponse;
use crate::throttle::client_network;
use head::{HeadGuard, HeadLimits, HeadRefusal, OnRefusal};
use http::StatusCode;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `server.max_connections` are open.
    Total,
    /// `server.max_connections_per_ip` are open from this client.
    PerClient,
}

/// Counts open client connections against `server.max_connections` and
/// `server.max_connections_per_ip` (per IPv4 address or IPv6 /64; trusted proxies
/// count only towards the total).
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_client: Option<usize>,
    trusted: Vec<IpNet>,
    open: AtomicUsize,
    per_client: DashMap<IpAddr, usize, foldhash::fast::RandomState>,
}

/// One admitted connection: counted until dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl ConnectionLimits {
    pub(crate) fn new(
        max_total: usize,
        max_per_client: Option<usize>,
        trusted: Vec<IpNet>,
    ) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_client,
            trusted,
            open: AtomicUsize::new(0),
            per_client: DashMap::default(),
        })
    }

    /// Admits a connection from `peer` if the limits allow; the connection counts
    /// until the returned [`Admission`] is dropped.
    pub(crate) fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Admission, Refused> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let client = match (peer, self.max_per_client) {
            (Some(ip), Some(max)) if !self.trusted.iter().any(|n| n.contains(&ip)) => {
                let key = client_network(ip);
                let mut count = self.per_client.entry(key).or_insert(0);
                if *count >= max {
                    drop(count);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refused::PerClient);
                }
                *count += 1;
                Some(key)
            }
            _ => None,
        };
        Ok(Admission {
            limits: Arc::clone(self),
            client,
        })
    }

    #[cfg(test)]
    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    #[cfg(test)]
    /// Clients with open connections counted per client.
    pub(crate) fn clients(&self) -> usize {
        self.per_client.len()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(key) = self.client {
            self.limits.per_client.remove_if_mut(&key, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answers to connections that are not admitted (problem+json, then close).
static REFUSALS: LazyLock<[Vec<u8>; 2]> = LazyLock::new(|| {
    let answer = |status, detail| {
        LocalResponse::problem(
            status,
            "CONNECTION_LIMIT_EXCEEDED",
            "Too many connections",
            detail,
            serde_json::json!({}),
        )
        .with_header("Retry-After", "1")
        .to_http1_closing()
    };
    [
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "The gateway has all its connections in use. Try again shortly.",
        ),
        answer(
            StatusCode::TOO_MANY_REQUESTS,
            "This client has too many connections open. Close some and try again.",
        ),
    ]
});

fn refusal_response(refused: Refused) -> &'static [u8] {
    match refused {
        Refused::Total => &REFUSALS[0],
        Refused::PerClient => &REFUSALS[1],
    }
}

/// What the guard reports (metrics).
pub(crate) trait ConnectionEvents: Send + Sync {
    fn refused(&self, refused: Refused);
    fn head_refused(&self, refusal: HeadRefusal);
}

/// A pingora app (the proxy) behind connection limits and head limits.
pub(crate) struct GuardedApp<A> {
    inner: Arc<A>,
    limits: Arc<ConnectionLimits>,
    head: HeadLimits,
    events: Arc<dyn ConnectionEvents>,
    on_head_refusal: OnRefusal,
}

impl<A> GuardedApp<A> {
    pub(crate) fn new(
        inner: A,
        limits: Arc<ConnectionLimits>,
        head: HeadLimits,
        events: Arc<dyn ConnectionEvents>,
    ) -> GuardedApp<A> {
        let reporter = Arc::clone(&events);
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            head,
            events,
            on_head_refusal: Arc::new(move |why| reporter.head_refused(why)),
        }
    }
}

/// How long a refused client gets to take its answer.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    /// Admits the connection (or answers 503/429 and closes it), waits for its first
    /// request head, then hands it to the proxy with its heads guarded; the
    /// connection counts until the proxy is done.
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let admission = match self.limits.admit(head::peer_ip(&stream)) {
            Ok(admission) => admission,
            Err(refused) => {
                self.events.refused(refused);
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                    stream.write_all(refusal_response(refused)).await?;
                    stream.flush().await
                })
                .await;
                return None;
            }
        };
        let mut guarded =
            HeadGuard::new(stream, self.head, Some(Arc::clone(&self.on_head_refusal)));
        // The proxy's per-connection state (a large future) is only made for a
        // connection whose first head has arrived: a client that never completes
        // one costs its head buffer and little more.
        let mut stopping = shutdown.clone();
        let arrived = tokio::select! {
            arrived = guarded.first_head() => arrived,
            // Shutting down: a connection that has not sent a head yet is let go.
            _ = async {
                if stopping.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => false,
        };
        if !arrived {
            return None;
        }
        let reused = self.inner.process_new(Box::new(guarded), shutdown).await;
        drop(admission);
        reused
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests;
