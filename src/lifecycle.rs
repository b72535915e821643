//! Process lifecycle: readiness, in-flight request accounting, signals and draining.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
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
}

/// Keeps one request counted in [`Inflight`] while alive.
#[derive(Debug)]
pub struct InflightGuard {
    inflight: Arc<Inflight>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Signal handling: SIGTERM and SIGINT both drain in-flight requests then exit
/// (pingora's default treats SIGINT as an immediate stop).
pub struct SignalWatch;

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received: draining in-flight requests");
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received: draining in-flight requests");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

/// Watches the server's phases: marks the gateway not ready as soon as shutdown
/// starts, and ends the process as soon as no request is in flight during the
/// grace period (pingora would otherwise sleep the whole grace period).
pub fn spawn_drain_watcher(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    readiness: Arc<Readiness>,
    inflight: Arc<Inflight>,
) {
    std::thread::Builder::new()
        .name("licgate-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulTerminate)
                | Ok(ExecutionPhase::GracefulUpgradeTransferringFds)
                | Ok(ExecutionPhase::ShutdownStarted) => readiness.set_shutting_down(),
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    readiness.set_shutting_down();
                    while inflight.current() > 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    tracing::info!("all in-flight requests finished; exiting");
                    std::process::exit(0);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        })
        .expect("spawn drain watcher thread");
}

/// Probes each listener with a TCP connect until all accept, then marks the gateway
/// listening. A listener that is not up within `deadline` is fatal: the process
/// exits with status 1 rather than running without it.
pub fn spawn_listener_probe(addrs: Vec<SocketAddr>, readiness: Arc<Readiness>, deadline: Duration) {
    std::thread::Builder::new()
        .name("licgate-probe".into())
        .spawn(move || {
            let start = Instant::now();
            for addr in addrs {
                let target = connectable(addr);
                while TcpStream::connect_timeout(&target, Duration::from_millis(250)).is_err() {
                    if start.elapsed() > deadline {
                        tracing::error!(%addr, "listener did not come up; exiting");
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            readiness.set_listening();
            tracing::info!("ready");
        })
        .expect("spawn listener probe thread");
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
