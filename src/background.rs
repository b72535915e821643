//! Background work that lives as long as the server. Every job runs as a pingora
//! background service and stops when the server's shutdown begins; blocking work
//! (file reads, signature checks) runs on the runtime's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService, GenBackgroundService};

/// Starts a thread named `name` running a current-thread runtime until the process
/// ends, and returns the runtime's handle (work spawned on it runs on that thread).
pub fn runtime_thread(name: &str) -> std::io::Result<tokio::runtime::Handle> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = sender.send(Err(e));
                    return;
                }
            };
            let _ = sender.send(Ok(runtime.handle().clone()));
            runtime.block_on(std::future::pending::<()>());
        })?;
    receiver
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the thread ended at start")))
}

/// Waits `wait`, or less when shutdown begins; true when it began.
pub async fn sleep_or_shutdown(wait: Duration, shutdown: &mut ShutdownWatch) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.changed() => true,
    }
}

/// Runs blocking `work` on the blocking pool and waits for it (a panic in it is
/// logged, not propagated).
pub async fn run_blocking<F: FnOnce() + Send + 'static>(name: &'static str, work: F) {
    if let Err(e) = tokio::task::spawn_blocking(work).await {
        tracing::error!(job = name, error = %e, "background job failed");
    }
}

/// A job repeated until shutdown: waits what `wait` says, then runs `work` (blocking).
pub struct Periodic {
    name: &'static str,
    wait: Box<dyn Fn() -> Duration + Send + Sync>,
    work: Arc<dyn Fn() + Send + Sync>,
}

impl Periodic {
    /// The service running `work` after each wait of `wait()`.
    pub fn service(
        name: &'static str,
        wait: impl Fn() -> Duration + Send + Sync + 'static,
        work: impl Fn() + Send + Sync + 'static,
    ) -> GenBackgroundService<Periodic> {
        background_service(
            name,
            Periodic {
                name,
                wait: Box::new(wait),
                work: Arc::new(work),
            },
        )
    }
}

#[async_trait]
impl BackgroundService for Periodic {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if sleep_or_shutdown((self.wait)(), &mut shutdown).await {
                return;
            }
            let work = Arc::clone(&self.work);
            run_blocking(self.name, move || work()).await;
        }
    }
}

/// A background job run outside a pingora server, on a thread of its own (tests and
/// tools): dropping it begins the job's shutdown and waits for the job to end.
pub struct Detached {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Detached {
    /// Starts `job` on a current-thread runtime of its own.
    pub fn start<J: BackgroundService + Send + Sync + 'static>(
        job: &GenBackgroundService<J>,
    ) -> std::io::Result<Detached> {
        let task = job.task();
        let (stop, watch) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("licgate-job".into())
            .spawn(move || runtime.block_on(task.start(watch)))?;
        Ok(Detached {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_periodic_job_runs_until_shutdown_begins() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let service = Periodic::service(
            "test",
            || Duration::from_millis(5),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        );
        let job = Detached::start(&service).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "the job never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dropping begins the shutdown and returns once the job has ended.
        drop(job);
        let after = runs.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            after,
            "the job ran after its shutdown"
        );
    }
}
