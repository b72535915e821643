//! `licgate activation request|install`: offline (air-gapped) activation on the
//! installation's side. `request` writes a request file signed by the instance key and
//! remembers its nonce in the store; `install` checks the vendor's response file (the
//! vendor key's signature, this instance, the remembered nonce) and installs its
//! license token like any other license.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::LicenseConfig;
use crate::license::clock::{Clock, SystemClock};
use crate::license::instance_key::InstanceKey;
use crate::license::store::{write_atomically, Store};
use crate::link::hostname;
use crate::link::offline::Installation;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ActivationCommand {
    /// Write an offline activation request file for the vendor (signed by this
    /// installation's instance key).
    Request(RequestArgs),
    /// Install the vendor's offline response file.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// The license key (LG-…).
    #[arg(long)]
    pub key: String,
    /// Where to write the request.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// The response file from the vendor.
    pub file: PathBuf,
}

/// Runs `licgate activation …`; exit 0, or 1 with the reason.
pub fn run(command: ActivationCommand) -> ExitCode {
    let result = match command {
        ActivationCommand::Request(args) => request(&args),
        ActivationCommand::Install(args) => install(&args),
    };
    super::exit_code(result)
}

fn license_config(path: &Path) -> Result<LicenseConfig, String> {
    super::license_config(path, "there is no license store to activate")
}

fn request(args: &RequestArgs) -> Result<(), String> {
    let license = license_config(&args.config.config)?;
    let store = Store::open(&license.store_dir).map_err(|e| e.to_string())?;
    let instance_id = license.instance_id(&store).map_err(|e| e.to_string())?;
    let instance_key =
        InstanceKey::load_or_create(&license.instance_key_file).map_err(|e| e.to_string())?;
    let hostname = hostname();
    let installation = Installation {
        store: &store,
        instance_id: &instance_id,
        instance_key: &instance_key,
        hostname: &hostname,
    };
    let (file, key) = installation
        .activation_request(&args.key, SystemClock.now())
        .map_err(|e| e.to_string())?;
    write_atomically(&args.out, file.as_bytes()).map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} for instance {instance_id} (key {}): send it to the vendor, then run \
         `licgate activation install` with the response",
        args.out.display(),
        key.redacted()
    );
    Ok(())
}

fn install(args: &InstallArgs) -> Result<(), String> {
    let license = license_config(&args.config.config)?;
    let bytes = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let manager = license.open_manager().map_err(|e| e.to_string())?;
    let instance_key =
        InstanceKey::load_or_create(&license.instance_key_file).map_err(|e| e.to_string())?;
    let instance_id = manager.settings().verifier.instance_id().to_string();
    let hostname = hostname();
    let installation = Installation {
        store: manager.store(),
        instance_id: &instance_id,
        instance_key: &instance_key,
        hostname: &hostname,
    };
    let (installed, response) = installation
        .install_response(&manager, &license.public_keys, &bytes, None)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    eprintln!(
        "installed license {} for tenant {} (activation {}; status {:?}): a running gateway picks it up within license.scan_interval",
        response.license_id, installed.summary.tenant, response.activation_id, installed.summary.status
    );
    Ok(())
}
