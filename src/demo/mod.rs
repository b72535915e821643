//! `licgate demo`: the demo upstream app plus the gateway in front of it, on localhost.

pub mod app;

use std::net::SocketAddr;
use std::path::Path;

use crate::config::Config;
use crate::server::{self, ServeError};

/// The demo configuration template (`@LISTEN@`, `@ADMIN@`, `@APP@` are filled in).
pub const DEMO_CONFIG_TEMPLATE: &str = include_str!("../../config/demo.toml");

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The gateway's client listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The demo app's listener (port 0 picks a free port).
    pub app: SocketAddr,
}

/// The demo configuration for the given addresses.
pub fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    app: SocketAddr,
) -> Result<Config, ServeError> {
    let text = DEMO_CONFIG_TEMPLATE
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@APP@", &app.to_string());
    Ok(Config::parse(&text, Path::new("<demo config>"))?)
}

/// Starts the demo app on a thread of its own, then runs the gateway in front of it
/// until SIGTERM/SIGINT.
pub fn run(options: DemoOptions) -> Result<(), ServeError> {
    let listener = std::net::TcpListener::bind(options.app).map_err(|source| ServeError::Bind {
        addr: options.app,
        what: "demo app",
        source,
    })?;
    listener.set_nonblocking(true).map_err(ServeError::Io)?;
    let app_addr = listener.local_addr().map_err(ServeError::Io)?;
    std::thread::Builder::new()
        .name("licgate-demo-app".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build demo app runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("register demo listener");
                app::serve(listener).await;
            });
        })
        .map_err(ServeError::Io)?;

    let config = demo_config(options.listen, options.admin, app_addr)?;
    crate::logging::init(&config.log);
    let gateway = config.server.listen[0];
    println!("licgate demo");
    println!("  demo app (upstream):  http://{app_addr}/");
    println!("  gateway:              http://{gateway}/");
    println!(
        "  admin:                http://{}/healthz",
        config.admin.listen
    );
    println!();
    println!("Try:");
    println!("  open http://{gateway}/ in a browser (the demo app, through the gateway)");
    println!("  curl -s http://{gateway}/api/sales/orders?page=2    # JSON echo: see the X-Forwarded-* headers added");
    println!("  curl -s -H 'X-Licgate-Tenant: spoofed' http://{gateway}/api/hr/employees    # client X-Licgate-* is stripped");
    println!("  curl -s http://{}/readyz", config.admin.listen);
    println!("Press Ctrl+C to stop (in-flight requests are drained).");
    server::run(config)
}
