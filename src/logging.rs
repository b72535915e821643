//! Process-wide logging with `tracing` (pingora's `log` records are bridged in).
//!
//! The level filter sits behind a reload handle so a configuration reload can change
//! `log.level` without a restart; the format is fixed at start.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// The target of access-log lines.
pub(crate) const ACCESS_TARGET: &str = "licgate::access";

type FilterLayer = reload::Layer<EnvFilter, Registry>;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The filter for `log`: `RUST_LOG` when set, else `log.level`. (Access lines do
/// not go through `tracing`: see `access_log`.)
fn filter_for(log: &LogConfig) -> EnvFilter {
    if let Some(filter) = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
    {
        return filter;
    }
    EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether access lines are written: `log.access`, unless `log.level` (or
/// `RUST_LOG`) switches the access target off (`licgate::access=off`).
pub(crate) fn access_enabled(log: &LogConfig) -> bool {
    let off = format!("{ACCESS_TARGET}=off");
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| log.level.clone());
    log.access && !level.split(',').any(|d| d.trim() == off)
}

/// Installs the global subscriber for `log` (text or JSON lines on stderr, filtered by
/// `log.level`; `RUST_LOG` overrides the level when set). Safe to call more than once:
/// later calls are ignored.
pub(crate) fn init(log: &LogConfig) {
    let (filter, handle) = reload::Layer::new(filter_for(log));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let fmt: Box<dyn Layer<Layered<FilterLayer, Registry>> + Send + Sync> = match log.format {
        LogFormat::Text => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json().flatten_event(true)),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Applies `log.level` and `log.access` of a reloaded configuration (the format
/// needs a restart). Does nothing when logging was not initialised here.
pub(crate) fn apply(log: &LogConfig) {
    if let Some(handle) = FILTER.get() {
        if let Err(e) = handle.reload(filter_for(log)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}
