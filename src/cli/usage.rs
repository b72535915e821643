//! `licgate usage report | export | verify`: the ledger read from the store's
//! database (also while the gateway runs), signed usage reports made from it, and
//! their verification on the vendor's side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::calendar::parse_date;
use crate::config::{LicenseConfig, DEFAULT_CONFIG_PATH};
use crate::database::Database;
use crate::license::instance_key::{InstanceKey, InstancePublicKey};
use crate::license::store::{write_atomically, Store};
use crate::license::time_text;
use crate::usage::ledger::DAY;
use crate::usage::query::{read, read_seats, SeatRecord, UsageQuery, UsageRecord};
use crate::usage::report::{export, verify, Reporter, VerifyError};
use crate::usage::Granularity;

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Print the ledger's counts per tenant, feature and period.
    #[command(
        after_help = "Example:\n  licgate usage report --config /etc/licgate/licgate.toml --from 2026-11-01 --to 2026-11-30 --format csv"
    )]
    Report(ReportArgs),
    /// Write a signed usage report of a period for the vendor (true-up).
    #[command(
        after_help = "Example:\n  licgate usage export --config /etc/licgate/licgate.toml --from 2026-11-01 --to 2026-11-30 --out usage-2026-11.json"
    )]
    Export(ExportArgs),
    /// Check a usage report (the vendor's side): signature, chain, periods; print totals.
    #[command(
        after_help = "Example:\n  licgate usage verify usage-2026-11.json --instance-key customer-instance.pub.pem --previous usage-2026-10.json"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ConfigPath {
    /// Configuration file (its license.store_dir holds the ledger).
    #[arg(long, short = 'c', env = "LICGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub config: ConfigPath,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// First day (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub from: String,
    /// Last day (YYYY-MM-DD, UTC, inclusive).
    #[arg(long)]
    pub to: String,
    #[arg(long, default_value = "day", value_parser = ["hour", "day", "month"])]
    pub granularity: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print the seat figures (peak seats in use, most distinct users in a day) per
    /// tenant and period instead of the request counts (CSV and table).
    #[arg(long)]
    pub seats: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigPath,
    /// First day (YYYY-MM-DD, UTC): the day after the last report's period.
    #[arg(long)]
    pub from: String,
    /// Last day (YYYY-MM-DD, UTC, inclusive; before today).
    #[arg(long)]
    pub to: String,
    /// The report file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The report file.
    pub file: PathBuf,
    /// The instance's public key (SPKI PEM, from `licgate instance-id --public-key`).
    #[arg(long)]
    pub instance_key: PathBuf,
    /// The report received before this one (checks the chain and the periods).
    #[arg(long)]
    pub previous: Option<PathBuf>,
}

/// Runs a `usage` command: exit 0 on success, 1 with the reason otherwise.
pub fn run(command: UsageCommand) -> ExitCode {
    let result = match command {
        UsageCommand::Report(args) => report(&args),
        UsageCommand::Export(args) => export_report(&args),
        UsageCommand::Verify(args) => verify_report(&args),
    };
    super::exit_code(result)
}

/// The `[license]` section of the configuration at `path`.
fn license_config(path: &Path) -> Result<LicenseConfig, String> {
    super::license_config(path, "there is no ledger")
}

fn day(name: &str, text: &str) -> Result<i64, String> {
    parse_date(text).ok_or_else(|| format!("--{name} must be a date YYYY-MM-DD, not {text:?}"))
}

fn report(args: &ReportArgs) -> Result<(), String> {
    let license = license_config(&args.config.config)?;
    let granularity: Granularity = args.granularity.parse()?;
    let (from_day, to_day) = (day("from", &args.from)?, day("to", &args.to)?);
    if from_day > to_day {
        return Err("--from is after --to".into());
    }
    let db = Database::open_read_only(&license.store_dir).map_err(|e| e.to_string())?;
    let rows = read(
        &db,
        &UsageQuery {
            tenant: args.tenant.as_deref(),
            feature: None,
            from_day,
            to_day,
            granularity,
        },
    )
    .map_err(|e| e.to_string())?;
    let seats = read_seats(&db, args.tenant.as_deref(), from_day, to_day, granularity)
        .map_err(|e| e.to_string())?;
    let text = match (args.format, args.seats) {
        (Format::Json, _) => json_rows(&rows, &seats, granularity),
        (Format::Csv, false) => csv_rows(&rows, granularity),
        (Format::Csv, true) => csv_seats(&seats, granularity),
        (Format::Table, false) => table_rows(&rows, granularity),
        (Format::Table, true) => table_seats(&seats, granularity),
    };
    print!("{text}");
    Ok(())
}

/// `{"rows": [{"tenant", "feature", "period", "allowed", "limited", "refused",
/// "peak_concurrency"}], "seats": [{"tenant", "period", "peak_seats", "daily_users"}]}`.
fn json_rows(rows: &[UsageRecord], seats: &[SeatRecord], granularity: Granularity) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "tenant": r.tenant,
                "feature": r.feature,
                "period": granularity.label(r.period),
                "allowed": r.tally.allowed,
                "limited": r.tally.limited,
                "refused": r.tally.refused,
                "peak_concurrency": r.tally.peak_concurrency,
            })
        })
        .collect();
    let seats: Vec<serde_json::Value> = seats
        .iter()
        .map(|r| {
            serde_json::json!({
                "tenant": r.tenant,
                "period": granularity.label(r.period),
                "peak_seats": r.figures.peak_seats,
                "daily_users": r.figures.daily_users,
                "fleet": r.figures.fleet,
            })
        })
        .collect();
    let mut text =
        serde_json::to_string_pretty(&serde_json::json!({ "rows": rows, "seats": seats }))
            .expect("rows serialize");
    text.push('\n');
    text
}

/// The refusals of a row as `CODE=n;CODE=n`.
fn refused_text(record: &UsageRecord) -> String {
    let parts: Vec<String> = record
        .tally
        .refused
        .iter()
        .map(|(code, n)| format!("{code}={n}"))
        .collect();
    parts.join(";")
}

/// A CSV field, quoted when it needs to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_rows(rows: &[UsageRecord], granularity: Granularity) -> String {
    let mut out = String::from("tenant,feature,period,allowed,limited,refused,peak_concurrency\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            csv_field(&r.tenant),
            csv_field(&r.feature),
            granularity.label(r.period),
            r.tally.allowed,
            r.tally.limited,
            csv_field(&refused_text(r)),
            r.tally.peak_concurrency
        );
    }
    out
}

fn table_rows(rows: &[UsageRecord], granularity: Granularity) -> String {
    let header = [
        "TENANT", "FEATURE", "PERIOD", "ALLOWED", "LIMITED", "REFUSED", "PEAK",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.tenant.clone(),
                r.feature.clone(),
                granularity.label(r.period),
                r.tally.allowed.to_string(),
                r.tally.limited.to_string(),
                refused_text(r),
                r.tally.peak_concurrency.to_string(),
            ]
        })
        .collect();
    let mut out = super::table::render(&header, &cells);
    if rows.is_empty() {
        out.push_str("(no usage in this period)\n");
    }
    out
}

fn csv_seats(rows: &[SeatRecord], granularity: Granularity) -> String {
    let mut out = String::from("tenant,period,peak_seats,daily_users\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            csv_field(&r.tenant),
            granularity.label(r.period),
            r.figures.peak_seats,
            r.figures.daily_users
        );
    }
    out
}

fn table_seats(rows: &[SeatRecord], granularity: Granularity) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.tenant.clone(),
                granularity.label(r.period),
                r.figures.peak_seats.to_string(),
                r.figures.daily_users.to_string(),
            ]
        })
        .collect();
    let mut out = super::table::render(&["TENANT", "PERIOD", "PEAK SEATS", "USERS"], &cells);
    if rows.is_empty() {
        out.push_str("(no seats counted in this period)\n");
    }
    out
}

fn export_report(args: &ExportArgs) -> Result<(), String> {
    let license = license_config(&args.config.config)?;
    let (from_day, to_day) = (day("from", &args.from)?, day("to", &args.to)?);
    let store = Store::open(&license.store_dir).map_err(|e| e.to_string())?;
    let instance_id = license.instance_id(&store).map_err(|e| e.to_string())?;
    let key = InstanceKey::load_or_create(&license.instance_key_file).map_err(|e| e.to_string())?;
    let mut db = Database::open(&license.store_dir).map_err(|e| e.to_string())?;
    let now = crate::quota::clock::now();
    let replica_id = store.replica_id().map_err(|e| e.to_string())?;
    let exported = export(
        &mut db,
        &Reporter {
            key: &key,
            instance_id: &instance_id,
            replica_id: Some(&replica_id),
        },
        from_day,
        to_day,
        now.div_euclid(DAY),
        &time_text(now),
    )
    .map_err(|e| e.to_string())?;
    write_atomically(&args.out, exported.file.as_bytes()).map_err(|e| e.to_string())?;
    let again = if exported.again {
        " (the same report as before: this period was already exported)"
    } else {
        ""
    };
    println!(
        "usage report number {} for {} to {} written to {}{again}",
        exported.sequence,
        args.from,
        args.to,
        args.out.display()
    );
    println!("instance key: {}", key.fingerprint());
    Ok(())
}

fn verify_report(args: &VerifyArgs) -> Result<(), String> {
    let read_file = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let file = read_file(&args.file)?;
    let key_pem = String::from_utf8(read_file(&args.instance_key)?)
        .map_err(|_| format!("{}: not a PEM file", args.instance_key.display()))?;
    let key = InstancePublicKey::from_pem(&key_pem)
        .map_err(|e| format!("{}: {e}", args.instance_key.display()))?;
    let previous = args.previous.as_deref().map(read_file).transpose()?;
    let verified = verify(&file, &key, previous.as_deref())
        .map_err(|e: VerifyError| format!("{}: refused: {e}", args.file.display()))?;
    let r = &verified.report;
    println!(
        "{}: valid usage report number {} of instance {} ({}), {} to {}",
        args.file.display(),
        r.sequence,
        r.instance_id,
        r.instance_key_fingerprint,
        r.period.from,
        r.period.to
    );
    if verified.chained {
        println!(
            "chain: follows the previous report (number {})",
            r.sequence - 1
        );
    } else if r.sequence > 1 {
        println!("chain: not checked (give the previous report with --previous)");
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<24}  {:>10}  {:>8}  {:>8}  {:>5}  LICENSES",
        "TENANT", "ALLOWED", "LIMITED", "REFUSED", "PEAK"
    );
    for (tenant, tally) in &r.totals {
        let refused: u64 = tally.refused.values().sum();
        let licenses = r
            .licenses
            .get(tenant)
            .map(|l| l.join(","))
            .unwrap_or_default();
        let _ = writeln!(
            table,
            "{tenant:<24}  {:>10}  {:>8}  {refused:>8}  {:>5}  {licenses}",
            tally.allowed, tally.limited, tally.peak_concurrency
        );
    }
    let mut seats: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for day in &r.seats {
        let (peak, users) = seats.entry(&day.tenant).or_default();
        *peak = (*peak).max(day.usage.peak_seats);
        *users = (*users).max(day.usage.daily_users);
    }
    for (tenant, (peak, users)) in seats {
        let _ = writeln!(
            table,
            "seats of {tenant}: at most {peak} in use at once, at most {users} people in a day"
        );
    }
    print!("{table}");
    Ok(())
}
