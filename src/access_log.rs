//! The access log, off the request path: a request fills a recycled record (a few
//! copies, no formatting, no allocation once warm) and queues it; a writer thread
//! formats the records and writes them in batches, one `write` per batch, at least
//! every 100 ms, and everything queued when the log is finished (orderly shutdown
//! loses no line). A full queue drops the line and counts it (`Overflow::Drop`, the
//! default), or makes the request wait for room (`Overflow::Block`).
//!
//! Lines keep the format the `tracing` subscriber writes for the other logs: text
//! (`2026-12-01T10:00:00.123456Z  INFO licgate::access: client=… method=GET …`) or
//! one JSON object per line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

/// Lines queued at most (about 100 ms of a busy gateway's requests, several times).
pub(crate) const QUEUE_LINES: usize = 16_384;
/// A path buffer larger than this is not kept for reuse.
const KEPT_PATH_BYTES: usize = 2048;
/// The writer writes when its buffer holds this much, and at the end of each batch.
const WRITE_BYTES: usize = 64 * 1024;
/// How long the writer lets lines gather after a batch.
const GATHER: Duration = Duration::from_millis(2);
/// The longest the writer sleeps while nothing comes.
const IDLE: Duration = Duration::from_millis(100);

/// What a full queue does to a request's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the line and count it (`licgate_access_log_dropped_total`).
    Drop,
    /// Wait for room (the request's worker waits).
    Block,
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFormat {
    Text,
    Json,
}

/// Where lines go: stderr, or a file opened for appending (reopened on request, for
/// log rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sink {
    Stderr,
    File(PathBuf),
}

/// One request's line, before formatting.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// When the request ended, in microseconds since the Unix epoch.
    pub(crate) at_micros: u64,
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: http::Method,
    /// The path as forwarded, without the query.
    pub(crate) path: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) decision: &'static str,
    /// `None`: no licensed tenant.
    pub(crate) tenant: Option<Arc<str>>,
    pub(crate) duration_micros: u64,
    pub(crate) upstream_micros: Option<u64>,
}

struct Shared {
    filled: ArrayQueue<Box<Record>>,
    free: ArrayQueue<Box<Record>>,
    overflow: Overflow,
    dropped: prometheus::IntCounter,
    /// The writer is asleep waiting for lines.
    idle: AtomicBool,
    stop: AtomicBool,
    reopen: AtomicBool,
    writer: OnceLock<Thread>,
}

/// The access log's queue and writer thread.
pub(crate) struct AccessLog {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("queued", &self.shared.filled.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AccessLog {
    /// Opens `sink` and starts the writer thread.
    pub(crate) fn start(
        sink: Sink,
        format: LineFormat,
        overflow: Overflow,
        dropped: prometheus::IntCounter,
        unknown_tenant: &'static str,
    ) -> io::Result<AccessLog> {
        let mut out = Output::open(sink)?;
        let shared = Arc::new(Shared {
            filled: ArrayQueue::new(QUEUE_LINES),
            free: ArrayQueue::new(QUEUE_LINES),
            overflow,
            dropped,
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let writing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("licgate-access-log".into())
            .spawn(move || {
                let _ = writing.writer.set(std::thread::current());
                write_until_stopped(&writing, &mut out, format, unknown_tenant);
            })?;
        Ok(AccessLog {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A cleared record to fill (recycled; new only while the log warms up).
    pub(crate) fn record(&self) -> Box<Record> {
        self.shared.free.pop().unwrap_or_default()
    }

    /// Queues `record` for writing (see [`Overflow`]).
    pub(crate) fn push(&self, mut record: Box<Record>) {
        let shared = &*self.shared;
        loop {
            match shared.filled.push(record) {
                Ok(()) => break,
                Err(back) if shared.overflow == Overflow::Block => {
                    record = back;
                    self.wake();
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(back) => {
                    shared.dropped.inc();
                    recycle(shared, back);
                    return;
                }
            }
        }
        if shared.idle.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
        }
    }

    /// Lines dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// Reopens the file (after log rotation moved it away); nothing for stderr.
    pub(crate) fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Writes every queued line, flushes and stops the writer. Lines pushed later are
    /// queued but no longer written.
    pub(crate) fn finish(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Returns `record` to the free list, cleared (a large path buffer is let go).
fn recycle(shared: &Shared, mut record: Box<Record>) {
    record.tenant = None;
    if record.path.capacity() > KEPT_PATH_BYTES {
        record.path = Vec::new();
    } else {
        record.path.clear();
    }
    let _ = shared.free.push(record);
}

/// The writer thread's loop.
fn write_until_stopped(
    shared: &Shared,
    out: &mut Output,
    format: LineFormat,
    unknown_tenant: &'static str,
) {
    let mut buf = Vec::with_capacity(WRITE_BYTES + 4096);
    loop {
        // Lines popped after a reopen request go to the new file.
        if shared.reopen.swap(false, Ordering::SeqCst) {
            out.reopen();
        }
        let stopping = shared.stop.load(Ordering::SeqCst);
        let mut written = 0usize;
        while let Some(record) = shared.filled.pop() {
            format_line(&record, format, unknown_tenant, &mut buf);
            recycle(shared, record);
            written += 1;
            if buf.len() >= WRITE_BYTES {
                out.write(&buf);
                buf.clear();
            }
        }
        if !buf.is_empty() {
            out.write(&buf);
            buf.clear();
        }
        if stopping {
            out.flush();
            return;
        }
        if written > 0 {
            std::thread::sleep(GATHER);
            continue;
        }
        shared.idle.store(true, Ordering::SeqCst);
        if shared.filled.is_empty() && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(IDLE);
        }
        shared.idle.store(false, Ordering::SeqCst);
    }
}

/// Where the writer writes.
struct Output {
    sink: Sink,
    file: Option<File>,
}

impl Output {
    fn open(sink: Sink) -> io::Result<Output> {
        let file = match &sink {
            Sink::Stderr => None,
            Sink::File(path) => Some(open_append(path)?),
        };
        Ok(Output { sink, file })
    }

    fn write(&mut self, bytes: &[u8]) {
        let result = match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => io::stderr().lock().write_all(bytes),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the access log");
        }
    }

    fn flush(&mut self) {
        let _ = match &mut self.file {
            Some(file) => file.flush(),
            None => io::stderr().flush(),
        };
    }

    fn reopen(&mut self) {
        if let Sink::File(path) = &self.sink {
            match open_append(path) {
                Ok(file) => self.file = Some(file),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot reopen the access log; writing to the old file")
                }
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends `record`'s line to `out`.
fn format_line(record: &Record, format: LineFormat, unknown_tenant: &str, out: &mut Vec<u8>) {
    let path = String::from_utf8_lossy(&record.path);
    let tenant = record.tenant.as_deref().unwrap_or(unknown_tenant);
    let client = record.client.map(|ip| ip.to_string()).unwrap_or_default();
    match format {
        LineFormat::Text => {
            timestamp(record.at_micros, out);
            out.extend_from_slice(b"  INFO licgate::access: client=");
            out.extend_from_slice(client.as_bytes());
            out.extend_from_slice(b" method=");
            out.extend_from_slice(record.method.as_str().as_bytes());
            out.extend_from_slice(b" path=");
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(b" status=");
            digits(u64::from(record.status), 1, out);
            out.extend_from_slice(b" decision=");
            debug_str(record.decision, out);
            out.extend_from_slice(b" tenant=");
            debug_str(tenant, out);
            out.extend_from_slice(b" duration_ms=");
            millis(record.duration_micros, out);
            if let Some(upstream) = record.upstream_micros {
                out.extend_from_slice(b" upstream_ms=");
                millis(upstream, out);
            }
        }
        LineFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(record.at_micros, out);
            out.extend_from_slice(
                b"\",\"level\":\"INFO\",\"target\":\"licgate::access\",\"client\":",
            );
            json_str(&client, out);
            out.extend_from_slice(b",\"method\":");
            json_str(record.method.as_str(), out);
            out.extend_from_slice(b",\"path\":");
            json_str(&path, out);
            out.extend_from_slice(b",\"status\":");
            digits(u64::from(record.status), 1, out);
            out.extend_from_slice(b",\"decision\":");
            json_str(record.decision, out);
            out.extend_from_slice(b",\"tenant\":");
            json_str(tenant, out);
            out.extend_from_slice(b",\"duration_ms\":");
            millis(record.duration_micros, out);
            if let Some(upstream) = record.upstream_micros {
                out.extend_from_slice(b",\"upstream_ms\":");
                millis(upstream, out);
            }
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// `micros` as milliseconds with at most three decimals and no trailing zeros
/// (`1840` → `1.84`, `2000` → `2`), as `f64`'s display prints `micros / 1000`.
fn millis(micros: u64, out: &mut Vec<u8>) {
    let (whole, frac) = (micros / 1000, micros % 1000);
    digits(whole, 1, out);
    if frac > 0 {
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let keep = if digits[2] > 0 {
            3
        } else if digits[1] > 0 {
            2
        } else {
            1
        };
        out.push(b'.');
        for d in &digits[..keep] {
            out.push(b'0' + *d as u8);
        }
    }
}

/// `text` quoted as `tracing` quotes a string field in text lines (Rust's `Debug`).
fn debug_str(text: &str, out: &mut Vec<u8>) {
    let _ = write!(out, "{text:?}");
}

/// `text` as a JSON string.
fn json_str(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// `micros` since the epoch as RFC 3339 UTC with microseconds
/// (`2026-12-01T10:00:00.123456Z`), as the `tracing` subscriber writes its lines.
fn timestamp(micros: u64, out: &mut Vec<u8>) {
    let secs = micros / 1_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = crate::calendar::civil_from_days(days);
    digits(u64::try_from(year).unwrap_or(0), 4, out);
    out.push(b'-');
    digits(u64::try_from(month).unwrap_or(1), 2, out);
    out.push(b'-');
    digits(u64::try_from(day).unwrap_or(1), 2, out);
    out.push(b'T');
    digits(rem / 3600, 2, out);
    out.push(b':');
    digits(rem / 60 % 60, 2, out);
    out.push(b':');
    digits(rem % 60, 2, out);
    out.push(b'.');
    digits(micros % 1_000_000, 6, out);
    out.push(b'Z');
}

/// `n` in decimal, zero-padded to `width` digits (more when it needs more).
fn digits(n: u64, width: usize, out: &mut Vec<u8>) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let start = at.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, upstream: Option<u64>) -> Record {
        Record {
            at_micros: 1_796_119_200_123_456,
            client: Some("10.0.0.7".parse().unwrap()),
            method: http::Method::GET,
            path: path.as_bytes().to_vec(),
            status: 200,
            decision: "allowed",
            tenant: Some(Arc::from("acme")),
            duration_micros: 1840,
            upstream_micros: upstream,
        }
    }

    #[test]
    fn text_lines_look_like_the_tracing_lines() {
        let mut out = Vec::new();
        format_line(
            &record("/api/x", Some(1520)),
            LineFormat::Text,
            "_unknown",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-01T10:00:00.123456Z  INFO licgate::access: client=10.0.0.7 method=GET path=/api/x status=200 decision=\"allowed\" tenant=\"acme\" duration_ms=1.84 upstream_ms=1.52\n"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut out = Vec::new();
        let mut r = record("/a\"b", None);
        r.tenant = None;
        format_line(&r, LineFormat::Json, "_unknown", &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "licgate::access");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["tenant"], "_unknown");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.84);
        assert!(v.get("upstream_ms").is_none());
        assert_eq!(v["timestamp"], "2026-12-01T10:00:00.123456Z");
    }

    #[test]
    fn milliseconds_print_as_f64_would() {
        for micros in [
            0u64,
            1,
            10,
            100,
            999,
            1000,
            1840,
            2000,
            461_956,
            123_456_789,
        ] {
            let mut out = Vec::new();
            millis(micros, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                (micros as f64 / 1000.0).to_string(),
                "{micros}"
            );
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        let mut out = Vec::new();
        timestamp(0, &mut out);
        timestamp(951_782_400_000_000, &mut out); // 2000-02-29
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000000Z2000-02-29T00:00:00.000000Z"
        );
    }

    /// A log writing `format` to `access.log` in a new directory.
    fn file_log(format: LineFormat, overflow: Overflow) -> (tempfile::TempDir, PathBuf, AccessLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
        let log = AccessLog::start(
            Sink::File(path.clone()),
            format,
            overflow,
            dropped,
            "_unknown",
        )
        .unwrap();
        (dir, path, log)
    }

    #[test]
    fn every_line_is_written_by_finish_and_a_full_queue_drops() {
        let (_dir, path, log) = file_log(LineFormat::Text, Overflow::Drop);
        for i in 0..1000 {
            let mut r = log.record();
            r.path.extend_from_slice(format!("/n/{i}").as_bytes());
            r.decision = "allowed";
            log.push(r);
        }
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count() as u64 + log.dropped(), 1000);
        assert_eq!(log.dropped(), 0, "1000 lines fit the queue");
        assert!(text.lines().last().unwrap().contains("path=/n/999"));
    }

    #[test]
    fn a_reopened_file_takes_the_next_lines() {
        let (dir, path, log) = file_log(LineFormat::Json, Overflow::Block);
        let line = |log: &AccessLog| {
            let mut r = log.record();
            r.decision = "public";
            log.push(r);
        };
        line(&log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path)
            .unwrap_or_default()
            .is_empty()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written within 100 ms"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.reopen();
        line(&log);
        log.finish();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}
