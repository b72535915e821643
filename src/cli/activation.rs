//! `licgate activation request|install`: offline (air-gapped) activation on the
//! installation's side. `request` writes a request file signed by the instance key and
//! remembers its nonce in the store; `install` checks the vendor's response file (the
//! vendor key's signature, this instance, the remembered nonce) and installs its
//! license token like any other license.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::authority::key::{KeyError, LicenseKey};
use crate::authority::offline::{self, OfflineKind, OfflineRequest, REQUEST_FORMAT};
use crate::config::LicenseConfig;
use crate::license::clock::{Clock, SystemClock};
use crate::license::instance_key::InstanceKey;
use crate::license::store::{write_atomically, Store};

/// The pending request's nonce, kept in the store between `request` and `install`.
const PENDING_FILE: &str = "offline-request.json";

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

#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    created_at: i64,
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

/// This machine's host name (for the vendor's activation list).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn request(args: &RequestArgs) -> Result<(), String> {
    let key = LicenseKey::parse(&args.key).map_err(|e| match e {
        KeyError::Check => {
            "KEY_CHECK_FAILED: the license key has a typo (its check character does not match)"
                .to_string()
        }
        KeyError::Format => {
            "the license key is not of the form LG-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX".into()
        }
    })?;
    let license = license_config(&args.config.config)?;
    let store = Store::open(&license.store_dir).map_err(|e| e.to_string())?;
    let instance_id = license.instance_id(&store).map_err(|e| e.to_string())?;
    let instance_key =
        InstanceKey::load_or_create(&license.instance_key_file).map_err(|e| e.to_string())?;
    let mut random = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| "no system randomness".to_string())?;
    let nonce: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let now = SystemClock.now();
    let request = OfflineRequest {
        format: REQUEST_FORMAT.into(),
        kind: OfflineKind::Activate,
        license_key: Some(key.to_string()),
        activation_id: None,
        instance_id: instance_id.clone(),
        instance_public_key: instance_key.public_key_pem(),
        hostname: hostname(),
        nonce: nonce.clone(),
        created_at: now,
    };
    let pending = serde_json::to_vec(&Pending {
        nonce,
        created_at: now,
    })
    .expect("pending serializes");
    write_atomically(&store.dir().join(PENDING_FILE), &pending).map_err(|e| e.to_string())?;
    write_atomically(
        &args.out,
        offline::write_request(&request, &instance_key).as_bytes(),
    )
    .map_err(|e| e.to_string())?;
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
    let response = license
        .public_keys
        .iter()
        .find_map(|key| offline::read_response(&bytes, key).ok())
        .ok_or_else(|| {
            format!(
                "{}: not a response signed by the vendor key(s) of license.public_keys",
                args.file.display()
            )
        })?;
    let store = Store::open(&license.store_dir).map_err(|e| e.to_string())?;
    let instance_id = license.instance_id(&store).map_err(|e| e.to_string())?;
    if response.instance_id != instance_id {
        return Err(format!(
            "the response is for instance {}, this is {instance_id}",
            response.instance_id
        ));
    }
    let pending_path = store.dir().join(PENDING_FILE);
    let pending: Pending = std::fs::read(&pending_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("no offline request is pending here: run `licgate activation request` first")?;
    if pending.nonce != response.nonce {
        return Err(
            "the response answers another request (its nonce is not the pending request's)".into(),
        );
    }
    let Some(token) = response.token.as_deref() else {
        return Err(format!(
            "the response is a {:?} receipt, not an activation",
            response.kind
        ));
    };
    let manager = license.open_manager().map_err(|e| e.to_string())?;
    let summary = manager.install(token).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&pending_path);
    eprintln!(
        "installed license {} for tenant {} (activation {}; status {:?}): a running gateway picks it up within license.scan_interval",
        response.license_id, summary.tenant, response.activation_id, summary.status
    );
    Ok(())
}
