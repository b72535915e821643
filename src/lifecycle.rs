//! Process lifecycle: readiness, in-flight request accounting, signals and draining.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// What `/readyz` reports: ready once the configuration and the license snapshot are
/// loaded and every listener accepts connections, and no longer ready once shutdown
/// begins.
#[derive(Debug, Default)]
pub struct Readiness {
    config_loaded: AtomicBool,
    licenses_loaded: AtomicBool,
    listening: AtomicBool,
    shutting_down: AtomicBool,
}

/// A point-in-time view of [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessReport {
    pub config_loaded: bool,
    pub licenses_loaded: bool,
    pub listening: bool,
    pub shutting_down: bool,
}

impl ReadinessReport {
    /// True when the gateway should receive traffic.
    pub fn ready(&self) -> bool {
        self.config_loaded && self.licenses_loaded && self.listening && !self.shutting_down
    }
}

impl Readiness {
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }

    /// The license snapshot has been built (or licensing is off).
    pub fn set_licenses_loaded(&self) {
        self.licenses_loaded.store(true, Ordering::Release);
    }

    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn report(&self) -> ReadinessReport {
        ReadinessReport {
            config_loaded: self.config_loaded.load(Ordering::Acquire),
            licenses_loaded: self.licenses_loaded.load(Ordering::Acquire),
            listening: self.listening.load(Ordering::Acquire),
            shutting_down: self.shutting_down.load(Ordering::Acquire),
        }
    }
}

/// Counts requests being served. Each request holds an [`InflightGuard`] for its
/// whole life (including upgraded WebSocket connections), released on drop whatever
/// way the request ends.
#[derive(Debug, Default)]
pub struct Inflight {
    count: AtomicUsize,
    /// Set once a drain waits: from then on the last request out says so.
    draining: AtomicBool,
    drained: tokio::sync::Notify,
}

impl Inflight {
    /// Registers one request; it counts until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard {
            inflight: Arc::clone(self),
        }
    }

    /// Requests currently being served.
    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once no request is in flight (woken by the last request to end, not
    /// polled).
    pub async fn drained(&self) {
        self.draining.store(true, Ordering::SeqCst);
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a request ending in between wakes it.
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps one request counted in [`Inflight`] while alive.
#[derive(Debug)]
pub struct InflightGuard {
    inflight: Arc<Inflight>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let inflight = &*self.inflight;
        if inflight.count.fetch_sub(1, Ordering::SeqCst) == 1
            && inflight.draining.load(Ordering::SeqCst)
        {
            inflight.drained.notify_waiters();
        }
    }
}

/// Signal handling: SIGTERM and SIGINT both drain in-flight requests then exit
/// (pingora's default treats SIGINT as an immediate stop). The handlers are installed
/// by [`SignalWatch::install`], before any listener opens: pingora asks for the signal
/// only once its services run, and a SIGTERM in between would end the process
/// without a drain.
pub struct SignalWatch {
    received: tokio::sync::watch::Receiver<bool>,
}

impl SignalWatch {
    /// Installs the SIGTERM and SIGINT handlers now, on a thread of their own.
    pub fn install() -> std::io::Result<SignalWatch> {
        let runtime = crate::background::runtime_thread("licgate-signals")?;
        let (mut term, mut int) = {
            let _entered = runtime.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        let (received_tx, received) = tokio::sync::watch::channel(false);
        // Further signals while draining are ignored (the handlers stay installed).
        runtime.spawn(async move {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received: draining in-flight requests");
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received: draining in-flight requests");
                }
            }
            let _ = received_tx.send(true);
        });
        Ok(SignalWatch { received })
    }
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut received = self.received.clone();
        if received.wait_for(|r| *r).await.is_err() {
            tracing::error!("the signal thread ended; shutting down");
            return ShutdownSignal::FastShutdown;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Why the server stopped being supervised.
#[derive(Debug, PartialEq, Eq)]
pub enum Supervised {
    /// Shutdown began and every in-flight request finished (or the server stopped).
    Stopped,
    /// A listener did not accept connections within the start-up deadline.
    ListenerDown(SocketAddr),
}

/// Supervises a running server from the thread that started it: marks the gateway
/// listening once every listener in `addrs` accepts connections (within
/// `deadline`), not ready as soon as shutdown starts, and returns as soon as no
/// request is in flight during the grace period (pingora would otherwise sleep the
/// whole grace period), or when the server ends (`ended`).
pub async fn supervise(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    readiness: Arc<Readiness>,
    inflight: Arc<Inflight>,
    addrs: Vec<SocketAddr>,
    deadline: Duration,
    mut ended: tokio::sync::oneshot::Receiver<()>,
) -> Supervised {
    use tokio::sync::broadcast::error::RecvError;
    let probe = probe_listeners(addrs, deadline);
    tokio::pin!(probe);
    let mut probing = true;
    loop {
        tokio::select! {
            probed = &mut probe, if probing => {
                probing = false;
                match probed {
                    Ok(()) => {
                        readiness.set_listening();
                        tracing::info!("ready");
                    }
                    Err(addr) => {
                        tracing::error!(%addr, "listener did not come up; exiting");
                        return Supervised::ListenerDown(addr);
                    }
                }
            }
            phase = phases.recv() => match phase {
                Ok(ExecutionPhase::GracefulTerminate)
                | Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
                | Ok(ExecutionPhase::ShutdownStarted) => readiness.set_shutting_down(),
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    readiness.set_shutting_down();
                    tokio::select! {
                        _ = inflight.drained() => {
                            tracing::info!("all in-flight requests finished; exiting");
                        }
                        _ = &mut ended => {}
                    }
                    return Supervised::Stopped;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Supervised::Stopped,
            },
            _ = &mut ended => return Supervised::Stopped,
        }
    }
}

/// Connects to each of `addrs` until it accepts; `Err` with the first that does not
/// within `deadline`.
async fn probe_listeners(addrs: Vec<SocketAddr>, deadline: Duration) -> Result<(), SocketAddr> {
    let start = Instant::now();
    for addr in addrs {
        let target = connectable(addr);
        loop {
            let attempt = tokio::net::TcpStream::connect(target);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), attempt).await {
                break;
            }
            if start.elapsed() > deadline {
                return Err(addr);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(())
}

/// The address to connect to for a listen address (wildcards map to loopback).
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases_on_drop() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.enter();
        let b = inflight.enter();
        assert_eq!(inflight.current(), 2);
        drop(a);
        assert_eq!(inflight.current(), 1);
        drop(b);
        assert_eq!(inflight.current(), 0);
    }

    #[tokio::test]
    async fn a_drain_is_woken_by_the_last_request_to_end() {
        let inflight = Arc::new(Inflight::default());
        let a = inflight.enter();
        let b = inflight.enter();
        let waiting = tokio::spawn({
            let inflight = Arc::clone(&inflight);
            async move { inflight.drained().await }
        });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one request is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the last request ended")
            .unwrap();
        // Nothing in flight: returns at once.
        inflight.drained().await;
    }

    #[test]
    fn ready_needs_config_and_listeners_and_no_shutdown() {
        let r = Readiness::default();
        assert!(!r.report().ready());
        r.set_config_loaded();
        assert!(!r.report().ready());
        r.set_licenses_loaded();
        assert!(!r.report().ready());
        r.set_listening();
        assert!(r.report().ready());
        r.set_shutting_down();
        assert!(!r.report().ready());
    }

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(
            connectable("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            connectable("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            connectable("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse().unwrap()
        );
    }
}
