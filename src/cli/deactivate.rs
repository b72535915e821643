//! `licgate deactivate`: frees this installation's activations at the license server
//! and removes their licenses here (moving an installation). Offline, it writes a
//! signed deactivation request file for the vendor instead and removes the licenses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::config::Config;
use crate::license::clock::{Clock, SystemClock};
use crate::license::instance_key::InstanceKey;
use crate::license::store::write_atomically;
use crate::link::offline::Installation;
use crate::link::records::Records;
use crate::link::{hostname, Link};

#[derive(Debug, Args)]
pub struct DeactivateArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Only this tenant's activations (default: every activation of the installation).
    #[arg(long)]
    pub tenant: Option<String>,
    /// No connection to the license server: write the signed deactivation request
    /// here (for the vendor) and remove the license.
    #[arg(long, value_name = "FILE")]
    pub offline_request: Option<PathBuf>,
}

/// Runs `licgate deactivate`; exit 0, or 1 with the reason.
pub fn run(args: &DeactivateArgs) -> ExitCode {
    super::exit_code(deactivate(args))
}

fn deactivate(args: &DeactivateArgs) -> Result<(), String> {
    let path = &args.config.config;
    let config = Config::load(path).map_err(|e| e.lines().join("\n"))?;
    let license = config.license.as_ref().ok_or_else(|| {
        format!(
            "{} has no [license] section: there is nothing to deactivate",
            path.display()
        )
    })?;
    let manager = license.open_manager().map_err(|e| e.to_string())?;
    let records = Records::open(manager.store().dir()).map_err(|e| e.to_string())?;
    let mut tenants: Vec<String> = records
        .list()
        .into_iter()
        .map(|r| r.tenant)
        .filter(|t| args.tenant.as_ref().is_none_or(|only| only == t))
        .collect();
    tenants.dedup();
    if tenants.is_empty() {
        return Err(match &args.tenant {
            Some(t) => format!("tenant {t} has no activation at the license server"),
            None => "this installation has no activation at the license server".into(),
        });
    }
    let instance_key = Arc::new(
        InstanceKey::load_or_create(&license.instance_key_file).map_err(|e| e.to_string())?,
    );
    if let Some(out) = &args.offline_request {
        return offline(&manager, &records, &instance_key, &tenants, out);
    }
    let authority = config.authority.as_ref().ok_or_else(|| {
        format!(
            "{} has no [authority] section: use --offline-request FILE to deactivate offline",
            path.display()
        )
    })?;
    let link = Link::new(authority, license, Arc::clone(&manager), instance_key)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for tenant in &tenants {
        let done = runtime
            .block_on(link.deactivate(tenant))
            .map_err(|e| e.to_string())?;
        for d in done {
            println!(
                "tenant {tenant}: license {} {} (activation {}); removed here",
                d.license_id, d.result, d.activation_id
            );
        }
    }
    eprintln!("a running gateway on this store drops the licenses within license.scan_interval");
    Ok(())
}

/// Writes the deactivation request of the (single) activation of `tenants` to `out`
/// and removes its license and record.
fn offline(
    manager: &crate::license::LicenseManager,
    records: &Records,
    instance_key: &InstanceKey,
    tenants: &[String],
    out: &std::path::Path,
) -> Result<(), String> {
    let chosen: Vec<_> = records
        .list()
        .into_iter()
        .filter(|r| tenants.contains(&r.tenant))
        .collect();
    let [record] = chosen.as_slice() else {
        return Err(format!(
            "one request file frees one activation, and {} are selected: choose one with --tenant",
            chosen.len()
        ));
    };
    let instance_id = manager.settings().verifier.instance_id().to_string();
    let host = hostname();
    let installation = Installation {
        store: manager.store(),
        instance_id: &instance_id,
        instance_key,
        hostname: &host,
    };
    let file = installation
        .deactivation_request(&record.activation_id, SystemClock.now())
        .map_err(|e| e.to_string())?;
    write_atomically(out, file.as_bytes()).map_err(|e| e.to_string())?;
    manager
        .remove(&record.tenant, &record.license_id)
        .map_err(|e| e.to_string())?;
    records
        .remove(&record.license_id)
        .map_err(|e| e.to_string())?;
    println!(
        "wrote {} (activation {}) and removed license {} of tenant {}: send the file to the vendor to free the slot",
        out.display(),
        record.activation_id,
        record.license_id,
        record.tenant
    );
    Ok(())
}
