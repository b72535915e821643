//! A thread of its own that does one piece of work every interval and once more when
//! told to stop (the savers of the quota counts and of the seats: their buffers are
//! reused from run to run, and a slow disk never holds up anything else).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running thread; [`PeriodicThread::finish`] (or dropping it) stops it after a
/// last run.
#[derive(Debug)]
pub(crate) struct PeriodicThread {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl PeriodicThread {
    /// Starts thread `name` calling `run(last)` every `interval`; `last` is `true`
    /// on the final run, after [`PeriodicThread::finish`] was called.
    pub(crate) fn start(
        name: &str,
        interval: Duration,
        mut run: impl FnMut(bool) + Send + 'static,
    ) -> std::io::Result<PeriodicThread> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                let (flag, wake) = &*stopping;
                let last = {
                    let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = wake
                        .wait_timeout_while(guard, interval, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    *guard
                };
                run(last);
                if last {
                    return;
                }
            })?;
        Ok(PeriodicThread {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks for the last run and waits for it to end.
    pub(crate) fn finish(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PeriodicThread {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_interval_and_once_more_when_finished() {
        let runs = Arc::new(AtomicUsize::new(0));
        let last_seen = Arc::new(AtomicUsize::new(0));
        let (r, l) = (Arc::clone(&runs), Arc::clone(&last_seen));
        let mut thread = PeriodicThread::start("test", Duration::from_millis(5), move |last| {
            r.fetch_add(1, Ordering::SeqCst);
            l.fetch_add(usize::from(last), Ordering::SeqCst);
        })
        .unwrap();
        while runs.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        thread.finish();
        assert_eq!(last_seen.load(Ordering::SeqCst), 1);
        let total = runs.load(Ordering::SeqCst);
        thread.finish();
        assert_eq!(runs.load(Ordering::SeqCst), total, "finished once");
    }
}
