//! Assembles and runs the pingora server for a validated [`Config`]: the proxy
//! service, the admin service, readiness probing, signals and draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::app::{App, Rules};
use crate::background::Periodic;
use crate::config::{Config, ConfigError, ResolveError};
use crate::connection::head::{HeadLimits, HeadRefusal};
use crate::connection::{ConnectionEvents, ConnectionLimits, GuardedApp, Refused};
use crate::lifecycle::{self, Inflight, Readiness, SignalWatch, Supervised};
use crate::metrics::ConnectionRefusal;
use crate::metrics::{Metrics, TenantCounterSource};
use crate::proxy::Gateway;
use crate::reload::{self, FileWatch, Reloader, SighupReloads};
use crate::tenants::Tenants;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::services::background::{background_service, GenBackgroundService};

/// How long listeners get to come up before start-up is declared failed.
const LISTEN_DEADLINE: Duration = Duration::from_secs(15);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::license::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("pages.templates_dir: {0}")]
    Templates(#[from] crate::pages::TemplateError),
    #[error("the listener on {0} did not come up")]
    ListenerDown(SocketAddr),
}

/// Fails early, with the address named, when a listen address cannot be bound
/// (in use, not local, no permission) rather than letting a listener die later.
fn check_bindable(addr: SocketAddr, what: &'static str) -> Result<(), ServeError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| ServeError::Bind { addr, what, source })
}

/// The pingora process settings derived from the configuration.
fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        // Pingora sleeps the whole grace period; the drain watcher ends the process
        // as soon as nothing is in flight, so this is the upper bound only.
        grace_period_seconds: Some(config.server.shutdown_timeout.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.upstream.keepalive_pool_size,
        work_stealing: config.server.work_stealing,
        ca_file: config
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        ..ServerConf::default()
    }
}

/// Once a minute: drops quota state of tenants that no longer have a license, and
/// forgets activation attempts and per-client counts that no longer count.
fn cleanup(app: Arc<App>) -> GenBackgroundService<Periodic> {
    Periodic::service(
        "cleanup",
        || Duration::from_secs(60),
        move || {
            if let Some(licenses) = &app.licenses {
                let snapshot = licenses.snapshot();
                app.quotas.retain_licensed(&snapshot);
                if let Some(redis) = &app.redis {
                    redis.retain_licensed(&snapshot);
                }
            }
            app.activation_limiter.prune();
            if let Some(shares) = &app.shares {
                shares.prune(crate::quota::clock::now());
            }
        },
    )
}

/// Once a second: gives back idle quota slices and adds fallback counts to Redis.
struct RedisUpkeep(Arc<App>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for RedisUpkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(redis) = &self.0.redis else { return };
        while !crate::background::sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
            redis.upkeep(false).await;
        }
    }
}

/// Tenants logged one by one at start; beyond, only the count of each status.
const TENANTS_LOGGED_AT_START: usize = 50;

/// Logs the instance id and the tenants' statuses once at start: each tenant's when
/// there are few, how many have each status when there are many.
fn log_license_summary(
    manager: &crate::license::LicenseManager,
    key: Option<&crate::license::instance_key::InstanceKey>,
) {
    let snapshot = manager.snapshot();
    tracing::info!(
        instance_id = %snapshot.instance_id,
        instance_key = key.map(|k| k.fingerprint()).unwrap_or_default(),
        store = %manager.store().dir().display(),
        tenants = snapshot.tenants.len(),
        "licensing ready"
    );
    if snapshot.tenants.len() > TENANTS_LOGGED_AT_START {
        let mut by_status: std::collections::BTreeMap<&str, usize> = Default::default();
        for t in snapshot.tenants.values() {
            *by_status.entry(t.status.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = by_status
            .iter()
            .map(|(status, n)| format!("{status}={n}"))
            .collect();
        tracing::info!(
            statuses = %counts.join(" "),
            "licenses (GET /admin/v1/tenants lists each tenant)"
        );
        return;
    }
    let mut tenants: Vec<_> = snapshot.tenants.values().collect();
    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    for t in tenants {
        tracing::info!(
            tenant = %t.tenant,
            status = %t.status,
            tier = t.tier.as_deref().unwrap_or(""),
            expires = %t.expires_at.map(crate::license::time_text).unwrap_or_default(),
            "license"
        );
    }
}

/// The proxy services serving `config.server.listen` with `gateway`.
///
/// Without work stealing (the default), one single-threaded service per thread, all
/// on the same listening sockets: each thread accepts its own connections, serves
/// them and pools its own upstream connections, as nginx workers do. Everything a
/// request spawns (such as the watcher of an upstream connection returned to the
/// pool) then stays on the thread whose reactor owns the sockets; with one service
/// of several no-stealing threads, pingora spawns such tasks on a random thread,
/// which costs two cross-thread wake-ups per request. With work stealing, one
/// service on one work-stealing runtime of `threads` threads.
///
/// Every service admits connections through one [`ConnectionLimits`] and guards their
/// request heads (`server.header_timeout`, `server.max_header_bytes`).
fn proxy_services(
    server: &Server,
    config: &Config,
    gateway: Gateway,
    metrics: Arc<Metrics>,
) -> Vec<Service<ProxyApp>> {
    let (services, threads_each) = if config.server.work_stealing {
        (1, config.server.threads)
    } else {
        (config.server.threads, 1)
    };
    let limits = ConnectionLimits::new(
        config.server.max_connections,
        config.server.max_connections_per_ip,
        config.server.trusted_proxies.clone(),
    );
    let head = HeadLimits {
        timeout: config.server.header_timeout,
        max_bytes: config.server.max_header_bytes,
    };
    let events: Arc<dyn ConnectionEvents> = Arc::new(ConnectionMetrics(metrics));
    (0..services)
        .map(|_| {
            let app = GuardedApp::new(
                pingora::proxy::http_proxy(&server.configuration, gateway.clone()),
                Arc::clone(&limits),
                head,
                Arc::clone(&events),
            );
            let mut proxy = Service::new("licgate proxy".to_string(), app);
            for addr in &config.server.listen {
                // No L4 read buffer: the head guard reads request heads itself, and
                // pingora's default 64 KiB buffer per connection would double what
                // a slow client's unfinished head costs.
                proxy.add_listener(
                    ListenerConfig::tcp(addr.to_string())
                        .l4_buffer(L4BufferSettings::default().read(0)),
                );
            }
            proxy.threads = Some(threads_each);
            proxy
        })
        .collect()
}

/// The proxy app of one service: pingora's HTTP proxy behind the connection guard.
type ProxyApp = GuardedApp<pingora::proxy::HttpProxy<Gateway>>;

/// Counts the connection guard's refusals in `licgate_connections_refused_total`.
struct ConnectionMetrics(Arc<Metrics>);

impl ConnectionEvents for ConnectionMetrics {
    fn refused(&self, refused: Refused) {
        self.0.connection_refused(match refused {
            Refused::Total => ConnectionRefusal::MaxConnections,
            Refused::PerClient => ConnectionRefusal::MaxConnectionsPerIp,
        });
    }

    fn head_refused(&self, refusal: HeadRefusal) {
        self.0.connection_refused(match refusal {
            HeadRefusal::Timeout => ConnectionRefusal::HeaderTimeout,
            HeadRefusal::TooLarge => ConnectionRefusal::HeaderTooLarge,
        });
    }
}

/// Runs the gateway until a shutdown signal; returns once in-flight requests have
/// drained (or the shutdown timeout passed).
pub(crate) fn run(config: Config) -> Result<(), ServeError> {
    run_with(config, |_| {})
}

/// [`run`], with more services added by `extra` (the demo app).
pub(crate) fn run_with(config: Config, extra: impl FnOnce(&mut Server)) -> Result<(), ServeError> {
    let upstream_addr = config.upstream.address.resolve()?;
    for addr in &config.server.listen {
        check_bindable(*addr, "server.listen")?;
    }
    check_bindable(config.admin.listen, "admin.listen")?;

    let licenses = match &config.license {
        Some(license_config) => {
            let manager = license_config.open_manager()?;
            Some(manager)
        }
        None => {
            if config.mode != crate::config::Mode::Off {
                tracing::warn!("no [license] section: every tenant is unlicensed");
            }
            None
        }
    };

    let readiness = Arc::new(Readiness::default());
    readiness.set_licenses_loaded();
    let inflight = Arc::new(Inflight::default());

    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
    server.bootstrap();

    let tenants = Tenants::follow(licenses.as_deref());
    let metrics = Metrics::new(
        licenses.clone(),
        Some(Arc::clone(&tenants) as Arc<dyn TenantCounterSource>),
        Arc::clone(&inflight),
    );
    let rules = Rules::new(&config, upstream_addr)?;
    let app = Arc::new(App::new(
        &config,
        rules,
        licenses.clone(),
        tenants,
        Arc::clone(&metrics),
        Arc::clone(&inflight),
    )?);
    if let Some(manager) = &licenses {
        log_license_summary(manager, app.instance_key.as_deref());
    }
    server.add_service(cleanup(Arc::clone(&app)));
    if app.redis.is_some() {
        server.add_service(background_service(
            "redis quota upkeep",
            RedisUpkeep(Arc::clone(&app)),
        ));
    }
    if let (Some(manager), Some(license_config)) = (&licenses, &config.license) {
        server.add_service(manager.refresher(license_config.scan_interval));
    }
    if let Some(link) = &app.link {
        tracing::info!(authority = link.authority_url(), "license server configured: license keys activate there, heartbeats renew their licenses");
        server.add_service(link.heartbeats());
    }
    let reloader = Arc::new(Reloader::new(config.clone(), Arc::clone(&app)));
    reload::take_over_sighup()?;
    server.add_service(background_service(
        "SIGHUP reloads",
        SighupReloads(Arc::clone(&reloader)),
    ));
    if config.reload.watch {
        match FileWatch::new(Arc::clone(&reloader)) {
            Ok(watch) => {
                server.add_service(background_service("file watch", watch));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the configuration file and license store; reload with SIGHUP or the admin API")
            }
        }
    }
    let gateway = Gateway::new(Arc::clone(&app));
    let proxies = proxy_services(&server, &config, gateway, metrics);
    let mut admin = Service::new(
        "licgate admin".to_string(),
        AdminApp::new(Arc::clone(&readiness), Arc::clone(&app), reloader),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    for proxy in proxies {
        server.add_service(proxy);
    }
    server.add_service(admin);

    extra(&mut server);

    readiness.set_config_loaded();
    let phases = server.watch_execution_phase();
    let mut probe_addrs = config.server.listen.clone();
    probe_addrs.push(config.admin.listen);

    tracing::info!(
        listen = ?config.server.listen,
        upstream = %config.upstream.address,
        admin = %config.admin.listen,
        threads = config.server.threads,
        mode = ?config.mode,
        admin_api = config.admin.token.is_some(),
        "licgate starting"
    );
    // pingora runs on a thread of its own; this one supervises it and returns as soon
    // as the drain is done (the caller then ends the process, whatever is left of
    // pingora's grace period).
    let (ended, server_ended) = tokio::sync::oneshot::channel();
    let signals = SignalWatch::install()?;
    std::thread::Builder::new()
        .name("licgate-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signals),
            });
            let _ = ended.send(());
        })?;
    let supervised = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(lifecycle::supervise(
            phases,
            readiness,
            inflight,
            probe_addrs,
            LISTEN_DEADLINE,
            server_ended,
        ));
    // Every line of the requests served is written before the process ends, every
    // count is saved, and reserved quota slices go back to Redis.
    app.access_log.finish();
    app.finish_counts();
    if let Some(redis) = &app.redis {
        let given_back = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(redis.upkeep(true));
        if given_back > 0 {
            tracing::info!(
                requests = given_back,
                "unspent quota slices given back to Redis"
            );
        }
    }
    match supervised {
        Supervised::Stopped => Ok(()),
        Supervised::ListenerDown(addr) => Err(ServeError::ListenerDown(addr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services_for(toml: &str) -> Vec<Option<usize>> {
        let config = Config::parse(toml, std::path::Path::new("t.toml")).unwrap();
        let server = Server::new_with_opt_and_conf(None, server_conf(&config));
        let metrics = Metrics::new(None, None, Arc::new(Inflight::default()));
        let rules = Rules::new(&config, "127.0.0.1:9".parse().unwrap()).unwrap();
        let app = Arc::new(
            App::new(
                &config,
                rules,
                None,
                Arc::default(),
                Arc::clone(&metrics),
                Arc::default(),
            )
            .unwrap(),
        );
        let gateway = Gateway::new(app);
        proxy_services(&server, &config, gateway, metrics)
            .iter()
            .map(|s| s.threads)
            .collect()
    }

    #[test]
    fn one_single_threaded_service_per_thread_unless_work_stealing() {
        let base = "mode = \"off\"\n[upstream]\naddress = \"127.0.0.1:9\"\n[server]\nthreads = 3\n";
        assert_eq!(services_for(base), vec![Some(1); 3]);
        let stealing = format!("{base}work_stealing = true\n");
        assert_eq!(services_for(&stealing), vec![Some(3)]);
    }
}
