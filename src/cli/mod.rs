//! The `licgate` command line: `serve`, `check`, `demo`, `license`, `instance-id`,
//! `usage`, `healthcheck`.

pub mod activation;
pub mod authority;
pub mod deactivate;
pub(crate) mod healthcheck;
pub mod license;
mod table;
pub mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::demo::{self, DemoOptions};
use crate::{logging, server};

const EXAMPLES: &str = "\
Examples:
  licgate demo                                   # demo app + gateway on localhost
  licgate license keygen --out keys/             # vendor: a signing key pair
  licgate license issue --signing-key keys/vendor.key.pem --tenant default \\
      --tier professional --feature sales --days 365
  licgate license inspect customer.jwt --public-key keys/vendor.pub.pem
  licgate instance-id --config /etc/licgate/licgate.toml
  licgate usage report --config /etc/licgate/licgate.toml --from 2026-11-01 --to 2026-11-30
  licgate usage export --config /etc/licgate/licgate.toml --from 2026-11-01 --to 2026-11-30 --out usage.json
  licgate check --config /etc/licgate/licgate.toml
  licgate serve --config /etc/licgate/licgate.toml
  licgate healthcheck --ready                    # exit 0 when /readyz answers 200
  licgate activation request --config licgate.toml --key LG-… --out request.json
  licgate deactivate --config licgate.toml      # free the slot at the license server
  licgate authority serve --config authority.toml            # vendor: the license server
  licgate authority license create --policy pro --tenant acme  # prints the new key
  LICGATE_CONFIG=/etc/licgate/licgate.toml licgate serve

Signals (serve, demo): SIGTERM/SIGINT stop accepting connections, let in-flight
requests finish (at most server.shutdown_timeout), then exit 0.";

/// licgate: license app gateway for self-hosted web applications.
#[derive(Debug, Parser)]
#[command(name = "licgate", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in front of the configured upstream.
    #[command(after_help = "Example:\n  licgate serve --config /etc/licgate/licgate.toml")]
    Serve(ConfigArg),
    /// Validate the configuration; print every problem as file:line:col: message.
    #[command(after_help = "Example:\n  licgate check --config config/licgate.toml && echo ok")]
    Check(ConfigArg),
    /// Run a demo app with the gateway in front of it, on localhost.
    #[command(after_help = "Example:\n  licgate demo --listen 127.0.0.1:8080")]
    Demo(DemoArgs),
    /// Vendor tools: generate keys, issue and inspect licenses.
    #[command(subcommand)]
    License(Box<license::LicenseCommand>),
    /// Print this installation's instance id (licenses may be bound to it); the
    /// instance key's fingerprint goes to stderr.
    #[command(
        after_help = "Examples:\n  licgate instance-id --config /etc/licgate/licgate.toml\n  licgate instance-id --config /etc/licgate/licgate.toml --public-key > instance.pub.pem"
    )]
    InstanceId(InstanceIdArgs),
    /// The usage ledger: reports, signed exports for true-up, verification.
    #[command(subcommand)]
    Usage(usage::UsageCommand),
    /// Probe a running gateway's admin listener: exit 0 if /healthz (--ready: /readyz)
    /// answers 200, else 1. For container health checks.
    #[command(after_help = "Example:\n  licgate healthcheck --ready --address 127.0.0.1:9901")]
    Healthcheck(healthcheck::HealthcheckArgs),
    /// The license authority: the vendor's server (`serve`, `check`) and its admin
    /// commands (policies, licenses, activations, offline files, usage, events).
    #[command(subcommand)]
    Authority(Box<authority::AuthorityCommand>),
    /// Offline activation on this installation: write a request file for the vendor,
    /// install the vendor's response.
    #[command(
        subcommand,
        after_help = "Examples:\n  licgate activation request --config licgate.toml --key LG-… --out request.json\n  licgate activation install --config licgate.toml response.json"
    )]
    Activation(activation::ActivationCommand),
    /// Free this installation's activations at the license server and remove their
    /// licenses (to move the installation); --offline-request writes a request file
    /// for the vendor instead.
    #[command(
        after_help = "Examples:\n  licgate deactivate --config licgate.toml\n  licgate deactivate --config licgate.toml --tenant acme --offline-request deactivate.json"
    )]
    Deactivate(deactivate::DeactivateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', env = "LICGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InstanceIdArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the instance's public key (SPKI PEM) instead: what verifies its usage
    /// reports.
    #[arg(long)]
    pub public_key: bool,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gateway listener for clients.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (health, readiness).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin_listen: SocketAddr,
    /// Demo app listener (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub app_listen: SocketAddr,
}

/// Runs a parsed command line; the exit code is 0 on success, 1 on invalid
/// configuration, 2 on a start-up failure.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => check(&args.config),
        Command::Serve(args) => match Config::load(&args.config) {
            Ok(config) => {
                logging::init(&config.log);
                exit_with(server::run(config))
            }
            Err(e) => report_config_error(&args.config, &e),
        },
        Command::Demo(args) => {
            let options = DemoOptions {
                listen: args.listen,
                admin: args.admin_listen,
                app: args.app_listen,
            };
            exit_with(demo::run(options))
        }
        Command::License(command) => license::run(*command),
        Command::InstanceId(args) => instance_id(&args.config.config, args.public_key),
        Command::Usage(command) => usage::run(command),
        Command::Healthcheck(args) => healthcheck::run(&args),
        Command::Authority(command) => authority::run(*command),
        Command::Activation(command) => activation::run(command),
        Command::Deactivate(args) => deactivate::run(&args),
    }
}

/// `licgate instance-id`: the configured id, or the one persisted in the store
/// (generated and persisted on first use), and the instance key's fingerprint (on
/// stderr); with `public_key`, the instance's public key (created on first use).
fn instance_id(path: &Path, public_key: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return report_config_error(path, &e),
    };
    let Some(license) = &config.license else {
        eprintln!("licgate: {} has no [license] section", path.display());
        return ExitCode::from(1);
    };
    let result = crate::license::store::Store::open(&license.store_dir)
        .and_then(|store| license.instance_id(&store))
        .map_err(|e| e.to_string())
        .and_then(|id| {
            crate::license::instance_key::InstanceKey::load_or_create(&license.instance_key_file)
                .map(|key| (id, key))
                .map_err(|e| e.to_string())
        });
    match result {
        Ok((_, key)) if public_key => {
            print!("{}", key.public_key_pem());
            ExitCode::SUCCESS
        }
        Ok((id, key)) => {
            println!("{id}");
            eprintln!("instance key: {}", key.fingerprint());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("licgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `licgate check`: validates the configuration at `path`.
fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Some(authority) = &config.authority {
                if let Err(problem) = resolve_authority(authority) {
                    let source = std::fs::read_to_string(path).unwrap_or_default();
                    let located = crate::config::locate(
                        &path.display().to_string(),
                        &source,
                        vec![crate::config::Diagnostic::at(
                            authority.url_span.clone(),
                            format!("authority.url: {problem}"),
                        )],
                    );
                    for line in located {
                        eprintln!("{line}");
                    }
                    eprintln!("licgate: 1 problem(s) in {}", path.display());
                    return ExitCode::from(1);
                }
            }
            println!(
                "{}: configuration is valid (mode {:?}, {} listener(s), upstream {}{})",
                path.display(),
                config.mode,
                config.server.listen.len(),
                config.upstream.address,
                config
                    .authority
                    .as_ref()
                    .map(|a| format!(", license server {}", a.url))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report_config_error(path, &e),
    }
}

/// Resolves the license server's host name (`licgate check`): `Err` says why not.
fn resolve_authority(authority: &crate::config::AuthorityLinkConfig) -> Result<(), String> {
    use std::net::ToSocketAddrs as _;
    let host = authority.url.host_str().unwrap_or_default();
    let port = authority.url.port_or_known_default().unwrap_or(443);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{host} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// Exit 0 for `Ok`, else 1 with `licgate: <reason>` on stderr (the subcommands' way).
pub(crate) fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("licgate: {message}");
            ExitCode::from(1)
        }
    }
}

/// The `[license]` section of the configuration at `path` (`what` says why it is
/// needed, for the message when it is missing).
pub(crate) fn license_config(
    path: &Path,
    what: &str,
) -> Result<crate::config::LicenseConfig, String> {
    let config = Config::load(path).map_err(|e| e.lines().join("\n"))?;
    config
        .license
        .ok_or_else(|| format!("{} has no [license] section: {what}", path.display()))
}

fn report_config_error(path: &Path, e: &ConfigError) -> ExitCode {
    let lines = e.lines();
    for line in &lines {
        eprintln!("{line}");
    }
    eprintln!("licgate: {} problem(s) in {}", lines.len(), path.display());
    ExitCode::from(1)
}

fn exit_with(result: Result<(), server::ServeError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(server::ServeError::Config(e)) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("licgate: {e}");
            ExitCode::from(2)
        }
    }
}
