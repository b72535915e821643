//! Live reload: the configuration file (SIGHUP, `POST /admin/v1/reload`, or a change
//! of the file seen by the watcher) and the license store (a change of its files).
//!
//! A reload reads and validates the whole file, builds the new request rules, and
//! only then swaps them in: a file with errors changes nothing (its errors are logged
//! and counted, and returned to the admin API caller). Requests under way finish
//! with the rules they started with. Settings that only a restart can apply
//! (listeners, threads, the store directory, the quota backend, the log format) are
//! reported and keep their running values.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Serialize;

use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::SignalKind;

use crate::app::{App, Rules};
use crate::background::run_blocking;
use crate::config::{
    AdminConfig, AdminToken, Config, ConfigError, LicenseConfig, LogConfig, ReloadConfig,
    ServerConfig, UpstreamConfig,
};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Upstream(String),
    #[error("pages.templates_dir: {0}")]
    Templates(#[from] crate::pages::TemplateError),
    #[error("license store: {0}")]
    Store(#[from] crate::license::store::StoreError),
}

impl ReloadError {
    /// One message per problem (each configuration error as `file:line:col: message`).
    pub(crate) fn messages(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReloadReport {
    /// Whether the configuration file differed from the one in force.
    pub config_changed: bool,
    /// Whether the license snapshot was rebuilt (store or license settings changed).
    pub licenses_changed: bool,
    /// Changed settings that keep their running values until a restart.
    pub restart_required: Vec<&'static str>,
}

/// What set a reload off (for logs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    Signal,
    AdminApi,
    FileChange,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::AdminApi => "admin API",
            Trigger::FileChange => "file change",
        }
    }
}

struct State {
    /// The configuration the process started with (restart-only settings come from it).
    started: Config,
    /// The configuration in force.
    current: Config,
}

/// Reloads the configuration and licenses of a running gateway.
pub(crate) struct Reloader {
    path: PathBuf,
    state: Mutex<State>,
    app: Arc<App>,
    admin_token: Arc<ArcSwapOption<AdminToken>>,
}

impl Reloader {
    /// A reloader for the gateway started with `config` (read from `config.source`).
    pub(crate) fn new(config: Config, app: Arc<App>) -> Reloader {
        let admin_token = Arc::new(ArcSwapOption::from_pointee(config.admin.token.clone()));
        Reloader {
            path: config.source.clone(),
            state: Mutex::new(State {
                started: config.clone(),
                current: config,
            }),
            app,
            admin_token,
        }
    }

    /// The admin API's token in force (`None`: the API is off).
    pub(crate) fn admin_token(&self) -> Arc<ArcSwapOption<AdminToken>> {
        Arc::clone(&self.admin_token)
    }

    /// Reloads the configuration file and rescans the license store. On error
    /// nothing changes. Logs and counts the result either way.
    pub(crate) fn reload(&self, trigger: Trigger) -> Result<ReloadReport, ReloadError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.apply(&mut state);
        let metrics = &self.app.metrics;
        match &result {
            Ok(report) => {
                metrics.config_reload(true, !report.restart_required.is_empty());
                if !report.restart_required.is_empty() {
                    tracing::warn!(
                        settings = %report.restart_required.join(", "),
                        "changed settings need a restart and keep their running values"
                    );
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    config_changed = report.config_changed,
                    licenses_changed = report.licenses_changed,
                    "reload done"
                );
            }
            Err(e) => {
                metrics.config_reload(false, false);
                for message in e.messages() {
                    tracing::error!(trigger = trigger.as_str(), "reload failed: {message}");
                }
                tracing::error!(
                    trigger = trigger.as_str(),
                    "reload failed; the previous configuration stays in force"
                );
            }
        }
        result
    }

    fn apply(&self, state: &mut State) -> Result<ReloadReport, ReloadError> {
        let config = Config::load(&self.path)?;
        let upstream = config
            .upstream
            .address
            .resolve()
            .map_err(|e| ReloadError::Upstream(e.to_string()))?;
        let rules = Rules::new(&config, upstream).map_err(ReloadError::Templates)?;
        let config_changed = config != state.current;
        let licenses = self.app.licenses.as_ref();
        let license_settings = match (licenses, &config.license, &state.current.license) {
            (Some(manager), Some(new), Some(old)) if new != old => {
                Some(new.manager_settings(manager.store())?)
            }
            _ => None,
        };
        // Everything is checked: swap.
        if let (Some(seats), Some(seat_rules)) = (&self.app.seats, &rules.seats) {
            seats.set_times(seat_rules.times);
        }
        self.app.rules.store(Arc::new(rules));
        self.admin_token
            .store(config.admin.token.clone().map(Arc::new));
        crate::logging::apply(&config.log);
        let mut licenses_changed = false;
        if let (Some(manager), Some(settings)) = (licenses, license_settings) {
            manager.reconfigure(settings);
            licenses_changed = true;
        }
        if let Some(manager) = licenses {
            licenses_changed |= manager.refresh();
        }
        let restart_required = restart_required(&state.started, &config);
        state.current = config;
        Ok(ReloadReport {
            config_changed,
            licenses_changed,
            restart_required,
        })
    }
}

/// Settings that differ between `running` and `new` and only apply after a restart.
///
/// Every field of the configuration is named here: a new setting does not compile
/// until it is classed as live (`_`: the reload applies it) or restart-only.
pub(crate) fn restart_required(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut restart = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    let Config {
        source: _,
        mode: _,
        server,
        upstream,
        admin,
        license,
        tenants: _,
        paths: _,
        public_paths: _,
        features: _,
        model_rules: _,
        odoo: _,
        geoip: _,
        // The identity and the times apply at once; turning seats on or off (the
        // seat book and its writer) takes a restart.
        seats,
        authority,
        pages: _,
        quota,
        per_client_share,
        usage,
        log,
        reload,
    } = running;
    // Where the URL sits in the file does not matter, only what it says.
    let link = |a: &Option<crate::config::AuthorityLinkConfig>| {
        a.as_ref()
            .map(|a| (a.url.clone(), a.ca_file.clone(), a.timeout, a.grace_warning))
    };
    restart("authority", link(authority) != link(&new.authority));
    restart("seats", seats.is_some() != new.seats.is_some());
    let ServerConfig {
        listen,
        threads,
        // Forwarding takes the new list at once; the per-client connection limit
        // keeps exempting the proxies it started with.
        trusted_proxies: _,
        shutdown_timeout,
        work_stealing,
        header_timeout,
        max_header_bytes,
        max_connections,
        max_connections_per_ip,
    } = server;
    restart("server.listen", *listen != new.server.listen);
    restart("server.threads", *threads != new.server.threads);
    restart(
        "server.work_stealing",
        *work_stealing != new.server.work_stealing,
    );
    restart(
        "server.shutdown_timeout",
        *shutdown_timeout != new.server.shutdown_timeout,
    );
    restart(
        "server.header_timeout",
        *header_timeout != new.server.header_timeout,
    );
    restart(
        "server.max_header_bytes",
        *max_header_bytes != new.server.max_header_bytes,
    );
    restart(
        "server.max_connections",
        *max_connections != new.server.max_connections,
    );
    restart(
        "server.max_connections_per_ip",
        *max_connections_per_ip != new.server.max_connections_per_ip,
    );
    restart(
        "quota.per_client_share",
        *per_client_share != new.per_client_share,
    );
    let AdminConfig {
        listen: admin_listen,
        token: _,
    } = admin;
    restart("admin.listen", *admin_listen != new.admin.listen);
    let UpstreamConfig {
        address: _,
        tls: _,
        sni: _,
        verify_cert: _,
        ca_file,
        host_header: _,
        connect_timeout: _,
        read_timeout: _,
        write_timeout: _,
        idle_timeout: _,
        keepalive_pool_size,
    } = upstream;
    restart("upstream.ca_file", *ca_file != new.upstream.ca_file);
    restart(
        "upstream.keepalive_pool_size",
        *keepalive_pool_size != new.upstream.keepalive_pool_size,
    );
    match (license, &new.license) {
        (
            Some(LicenseConfig {
                public_keys: _,
                issuer: _,
                store_dir,
                instance_id: _,
                instance_key_file,
                policy: _,
                clock_leeway: _,
                scan_interval,
                clock_rollback_tolerance,
            }),
            Some(b),
        ) => {
            restart("license.store_dir", *store_dir != b.store_dir);
            restart(
                "license.instance_key_file",
                *instance_key_file != b.instance_key_file,
            );
            restart("license.scan_interval", *scan_interval != b.scan_interval);
            restart(
                "license.clock_rollback_tolerance",
                *clock_rollback_tolerance != b.clock_rollback_tolerance,
            );
        }
        (None, None) => {}
        _ => restart("[license]", true),
    }
    restart("quota", *quota != new.quota);
    restart("usage", *usage != new.usage);
    let LogConfig {
        format,
        level: _,
        access: _,
        access_file,
        access_overflow,
    } = log;
    restart("log.format", *format != new.log.format);
    restart("log.access_file", *access_file != new.log.access_file);
    restart(
        "log.access_overflow",
        *access_overflow != new.log.access_overflow,
    );
    let ReloadConfig { watch } = reload;
    restart("reload.watch", *watch != new.reload.watch);
    changed
}

/// Watches the configuration file and the license store: a changed configuration
/// file is reloaded, changed license files trigger a store rescan. Events are
/// debounced; the file's content is compared, so touching it does nothing.
///
/// The configuration file's directory is watched (editors and Kubernetes ConfigMaps
/// replace files rather than write them in place). Runs as a background service
/// until shutdown.
pub(crate) struct FileWatch {
    reloader: Arc<Reloader>,
    /// Keeps the OS watches alive as long as the job.
    _watcher: notify::RecommendedWatcher,
    events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<notify::Result<notify::Event>>>>,
    config_path: PathBuf,
    config_dir: PathBuf,
    store_dir: Option<PathBuf>,
}

impl FileWatch {
    /// Watches what `reloader` reloads (fails when the directories cannot be watched).
    pub(crate) fn new(reloader: Arc<Reloader>) -> notify::Result<FileWatch> {
        use notify::{RecursiveMode, Watcher};
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        })?;
        let config_path = reloader.path.clone();
        let config_dir = match config_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        watcher.watch(&config_dir, RecursiveMode::NonRecursive)?;
        let store = reloader.app.licenses.as_ref().map(|m| m.store());
        // The store and its `licenses/` directory, not recursively: a recursive
        // watch would list and stat every license file at start.
        if let Some(store) = store {
            watcher.watch(store.dir(), RecursiveMode::NonRecursive)?;
            watcher.watch(&store.licenses_dir(), RecursiveMode::NonRecursive)?;
        }
        let store_dir = store.map(|s| s.dir().to_path_buf());
        Ok(FileWatch {
            reloader,
            _watcher: watcher,
            events: Mutex::new(Some(events)),
            config_path,
            config_dir,
            store_dir,
        })
    }

    /// Adds what `event` touched to `seen` (other files in the directories, such as
    /// logs, are ignored).
    fn classify(&self, event: notify::Result<notify::Event>, seen: &mut Touched) {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let config_name = self.config_path.file_name();
        for path in &event.paths {
            if self.store_dir.as_ref().is_some_and(|d| path.starts_with(d)) {
                seen.store |= !is_store_bookkeeping(path);
            } else if path.parent() == Some(self.config_dir.as_path())
                && (path.file_name() == config_name
                    || path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("..")))
            {
                seen.config = true;
            }
        }
    }
}

#[async_trait::async_trait]
impl BackgroundService for FileWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut events) = self.events.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut last_text = std::fs::read(&self.config_path).ok();
        loop {
            let mut seen = Touched::default();
            // Wait for a relevant event, then let a burst of writes settle.
            while !seen.config && !seen.store {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => self.classify(event, &mut seen),
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                }
            }
            let settling = std::time::Instant::now();
            while settling.elapsed() < Duration::from_secs(1) {
                match tokio::time::timeout(Duration::from_millis(150), events.recv()).await {
                    Ok(Some(event)) => self.classify(event, &mut seen),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let (reloader, path) = (Arc::clone(&self.reloader), self.config_path.clone());
            let last = last_text.clone();
            last_text =
                tokio::task::spawn_blocking(move || apply_changes(&reloader, &path, &seen, last))
                    .await
                    .unwrap_or(None);
        }
    }
}

/// Carries out what a batch of file events touched: a configuration file whose
/// content differs from `last` is reloaded (which also rescans the store), else a
/// touched store is rescanned. Returns the configuration text now in force.
fn apply_changes(
    reloader: &Reloader,
    config_path: &Path,
    seen: &Touched,
    last: Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    if seen.config {
        let text = std::fs::read(config_path).ok();
        if text.is_some() && text != last {
            // Errors are logged and counted by `reload`.
            let _ = reloader.reload(Trigger::FileChange);
            return text;
        }
    }
    if seen.store {
        if let Some(manager) = &reloader.app.licenses {
            manager.refresh();
        }
    }
    last
}

/// What a batch of file events touched.
#[derive(Debug, Default)]
struct Touched {
    config: bool,
    store: bool,
}

/// Files the gateway itself writes in the store that do not change licenses (the
/// clock high-water mark, the authority link's bookkeeping, temporary files of atomic
/// writes).
fn is_store_bookkeeping(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name == "clock.json"
        || name == "usage-acknowledged.json"
        || name == "offline-request.json"
        || name == "activations"
        || name == crate::quota::durable::DIR
        || name.starts_with('.')
        || name.ends_with(".tmp")
}

/// Takes SIGHUP and SIGUSR1 over now, before the server starts (their default
/// action ends the process). Signals before [`SighupReloads`] runs change nothing.
pub(crate) fn take_over_sighup() -> std::io::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?
        .block_on(async {
            drop(tokio::signal::unix::signal(SignalKind::hangup())?);
            tokio::signal::unix::signal(SignalKind::user_defined1()).map(drop)
        })
}

/// Until shutdown: every SIGHUP reloads the configuration and reopens the access-log
/// file, every SIGUSR1 only reopens it (for logrotate). A background service.
pub(crate) struct SighupReloads(pub(crate) Arc<Reloader>);

#[async_trait::async_trait]
impl BackgroundService for SighupReloads {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let signals = tokio::signal::unix::signal(SignalKind::hangup()).and_then(|hangups| {
            Ok((
                hangups,
                tokio::signal::unix::signal(SignalKind::user_defined1())?,
            ))
        });
        let (mut hangups, mut usr1) = match signals {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGHUP/SIGUSR1; reload with the admin API");
                return;
            }
        };
        loop {
            tokio::select! {
                hangup = hangups.recv() => {
                    if hangup.is_none() {
                        return;
                    }
                    self.0.app.access_log.reopen();
                    let reloader = Arc::clone(&self.0);
                    // Errors are logged and counted by `reload`.
                    run_blocking("SIGHUP reload", move || {
                        let _ = reloader.reload(Trigger::Signal);
                    })
                    .await;
                }
                reopen = usr1.recv() => {
                    if reopen.is_none() {
                        return;
                    }
                    self.0.app.access_log.reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let (top, sections) = extra
            .split_once('[')
            .map_or((extra, ""), |(t, _)| (t, &extra[t.len()..]));
        Config::parse(
            &format!("{top}[upstream]\naddress = \"127.0.0.1:1\"\n{sections}"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn only_restart_only_settings_are_reported() {
        let running = config("[server]\nlisten = \"127.0.0.1:8080\"\n");
        let live = config(
            "mode = \"shadow\"\n[server]\nlisten = \"127.0.0.1:8080\"\n[log]\nlevel = \"debug\"\n[public]\npaths = [\"/static/\"]\n",
        );
        assert!(restart_required(&running, &live).is_empty());
        let moved = config(
            "[server]\nlisten = \"127.0.0.1:9090\"\nthreads = 7\nwork_stealing = true\n[log]\nformat = \"json\"\n[quota]\nbackend = \"redis\"\n",
        );
        assert_eq!(
            restart_required(&running, &moved),
            vec![
                "server.listen",
                "server.threads",
                "server.work_stealing",
                "quota",
                "log.format"
            ]
        );
    }

    #[test]
    fn store_bookkeeping_files_are_ignored() {
        assert!(is_store_bookkeeping(Path::new("/s/clock.json")));
        assert!(is_store_bookkeeping(Path::new(
            "/s/licenses/.a.jwt.tmp-1-2"
        )));
        assert!(!is_store_bookkeeping(Path::new("/s/licenses/a.jwt")));
        assert!(!is_store_bookkeeping(Path::new("/s/revocations.json")));
    }
}
