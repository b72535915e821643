//! `licgate authority serve`: the database opened (and migrated), the HTTP API on the
//! configured listener, and a background task that culls silent floating activations,
//! forgets old nonces and samples the database's latency. SIGTERM/SIGINT stop it
//! gracefully (requests in flight finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::api::{router, AppState};
use super::attempts::Attempts;
use super::clock;
use super::config::AuthorityConfig;
use super::db::{Db, DbError};
use super::metrics::AuthorityMetrics;
use super::protocol::Signer;
use super::store::Store;

/// How often the background task runs.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Why the authority could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs the authority until SIGTERM/SIGINT.
pub fn run(config: AuthorityConfig) -> Result<(), ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?
        .block_on(serve(config))
}

async fn serve(config: AuthorityConfig) -> Result<(), ServeError> {
    bind(config).await?.run(shutdown()).await
}

/// Starts the authority on a thread of its own (`licgate demo`'s embedded license
/// server): returns its address once it listens; it runs until the process ends.
pub fn spawn(config: AuthorityConfig) -> Result<SocketAddr, ServeError> {
    let (ready, bound) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("licgate-authority-server".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(ServeError::Runtime(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match bind(config).await {
                    Ok(server) => {
                        let _ = ready.send(Ok(server.local));
                        if let Err(e) = server.run(std::future::pending()).await {
                            tracing::error!(target: "licgate::authority", error = %e, "the embedded authority stopped");
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
        })
        .map_err(ServeError::Runtime)?;
    bound
        .recv()
        .map_err(|_| ServeError::Runtime(std::io::Error::other("the authority thread ended")))?
}

/// The authority with its database open and its listener bound.
struct Bound {
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    local: SocketAddr,
}

/// Opens (and migrates) the database and binds the listener.
async fn bind(config: AuthorityConfig) -> Result<Bound, ServeError> {
    let db = Db::open(&config.database, config.database_connections).await?;
    tracing::info!(
        target: "licgate::authority",
        database = %config.database.display(),
        dialect = db.dialect().name(),
        "database ready"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let state = Arc::new(AppState {
        store: Store::new(db, config.defaults.clone()),
        signer: Signer::new(
            config.signing_key,
            &config.signing_key_pem,
            config.kid,
            config.issuer,
        ),
        admin_token: config.admin_token,
        attempts: Attempts::new(config.attempts),
        metrics: AuthorityMetrics::new(),
        max_body_bytes: config.max_body_bytes,
    });
    let local = listener.local_addr().unwrap_or(config.listen);
    Ok(Bound {
        listener,
        state,
        local,
    })
}

impl Bound {
    /// Serves until `stop` resolves (requests in flight finish).
    async fn run(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let sweeper = tokio::spawn(sweep(self.state.clone()));
        tracing::info!(target: "licgate::authority", listen = %self.local, "authority listening");
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop)
            .await;
        sweeper.abort();
        tracing::info!(target: "licgate::authority", "authority stopped");
        served.map_err(ServeError::Serve)
    }
}

/// Resolves at SIGTERM or SIGINT.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The background work, every [`SWEEP_EVERY`].
async fn sweep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let now = clock::now();
        match state.store.cull_stale(now).await {
            Ok(0) => {}
            Ok(n) => {
                state.metrics.culled.inc_by(n);
                tracing::info!(target: "licgate::authority", culled = n, "culled silent floating activations");
            }
            Err(e) => tracing::warn!(target: "licgate::authority", error = %e, "cull failed"),
        }
        if let Err(e) = state.store.prune_nonces(now).await {
            tracing::warn!(target: "licgate::authority", error = %e, "nonce pruning failed");
        }
        state.attempts.forget_recovered();
        match state.store.db().ping().await {
            Ok(took) => {
                state.metrics.database_ping.observe(took.as_secs_f64());
                state.metrics.database_up.set(1);
            }
            Err(e) => {
                state.metrics.database_up.set(0);
                tracing::warn!(target: "licgate::authority", error = %e, "database ping failed");
            }
        }
    }
}
