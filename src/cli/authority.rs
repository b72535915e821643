//! `licgate authority …`: run the license server (`serve`, `check`) and the vendor's
//! commands over its admin API (policies, licenses, activations, offline files,
//! received usage, the audit). Tables by default, `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::table;
use crate::authority::client::{AdminClient, ClientError};
use crate::authority::config::AuthorityConfig;
use crate::license::{parse_time, time_text};

const EXAMPLES: &str = "\
Examples:
  licgate authority serve --config authority.toml
  export LICGATE_AUTHORITY_URL=http://127.0.0.1:7700 LICGATE_AUTHORITY_TOKEN_FILE=admin.token
  licgate authority policy create --name pro --tier professional --feature sales \\
      --limit requests_per_hour=5000 --max-activations 2 --days 365
  licgate authority license create --policy pro --tenant acme --customer 'ACME Ltd'
  licgate authority license suspend lic_…
  licgate authority activation list --license lic_…
  licgate authority offline activate request.json --out response.json";

#[derive(Debug, Subcommand)]
#[command(after_help = EXAMPLES)]
pub enum AuthorityCommand {
    /// Run the license server.
    Serve(ConfigArgs),
    /// Validate authority.toml; print every problem as file:line:col: message.
    Check(ConfigArgs),
    /// Plans: what licenses grant and how installations are counted.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Licenses: keys, status, expiry.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Installations holding a license's slots.
    #[command(subcommand)]
    Activation(ActivationCommand),
    /// Offline (air-gapped) activation files.
    #[command(subcommand)]
    Offline(OfflineCommand),
    /// Usage received from installations' reports.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// The audit of every change.
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The authority's configuration file.
    #[arg(
        long,
        short = 'c',
        env = "LICGATE_AUTHORITY_CONFIG",
        default_value = "authority.toml"
    )]
    pub config: PathBuf,
}

/// How to reach the admin API.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The authority's URL.
    #[arg(
        long,
        env = "LICGATE_AUTHORITY_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub url: String,
    /// A file holding the admin token.
    #[arg(
        long,
        env = "LICGATE_AUTHORITY_TOKEN_FILE",
        default_value = "admin.token",
        global = true
    )]
    pub token_file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyOptions {
    /// Plan code put in tokens (`tier`).
    #[arg(long)]
    pub tier: Option<String>,
    /// Plan display name.
    #[arg(long)]
    pub tier_name: Option<String>,
    /// A granted feature (repeatable; on update, replaces the list).
    #[arg(long = "feature", value_name = "FEATURE")]
    pub features: Vec<String>,
    /// A limit NAME=N (repeatable; on update, replaces the limits).
    #[arg(long = "limit", value_name = "NAME=N")]
    pub limits: Vec<String>,
    /// A per-feature quota FEATURE:NAME=N (repeatable).
    #[arg(long = "feature-limit", value_name = "FEATURE:NAME=N")]
    pub feature_limits: Vec<String>,
    /// How many installations may hold the license at once.
    #[arg(long)]
    pub max_activations: Option<u32>,
    /// A new license runs this many days.
    #[arg(long, conflicts_with = "perpetual")]
    pub days: Option<u32>,
    /// Licenses never expire.
    #[arg(long)]
    pub perpetual: bool,
    /// How long an installation runs without reaching the authority, e.g. 30d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub token_ttl: Option<std::time::Duration>,
    /// Time between heartbeats, e.g. 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Option<std::time::Duration>,
    /// Floating: an activation silent for --heartbeat-timeout frees its slot.
    #[arg(long, conflicts_with = "node_locked")]
    pub floating: bool,
    /// Node-locked: activations stay until deactivated (the default).
    #[arg(long)]
    pub node_locked: bool,
    /// Silence that frees a floating activation's slot, e.g. 3h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Option<std::time::Duration>,
    /// A flag such as trial or non_production (repeatable).
    #[arg(long = "flag", value_name = "FLAG")]
    pub flags: Vec<String>,
    /// Grace days after expiry.
    #[arg(long)]
    pub grace_days: Option<u32>,
    /// Read-only days after grace.
    #[arg(long)]
    pub read_only_days: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Create a policy.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        options: PolicyOptions,
        #[command(flatten)]
        remote: Remote,
    },
    /// List policies.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one policy.
    Show {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a policy (only the options given).
    Update {
        name: String,
        /// A new name.
        #[arg(long)]
        rename: Option<String>,
        #[command(flatten)]
        options: PolicyOptions,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Create a license; its key is printed alone on the last line (shown only now).
    Create {
        #[arg(long)]
        policy: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Runs this many days (instead of the policy's duration).
        #[arg(long, conflicts_with = "expires")]
        days: Option<u32>,
        /// Expires at this RFC 3339 date-time.
        #[arg(long)]
        expires: Option<String>,
        /// Overrides the policy's max_activations.
        #[arg(long)]
        max_activations: Option<u32>,
        /// A feature granted besides the policy's (repeatable).
        #[arg(long = "extra-feature", value_name = "FEATURE")]
        extra_features: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List licenses.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        policy: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a license with its activations.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Suspend: heartbeats answer `suspended`, no token is renewed.
    Suspend {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lift a suspension.
    Reinstate {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke for good: heartbeats list it in `revoked_license_ids`.
    Revoke {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Extend the expiry by N days.
    Renew {
        id: String,
        #[arg(long)]
        days: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Issue a new key (printed alone on the last line); the old one stops working.
    RotateKey {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum ActivationCommand {
    /// List activations.
    List {
        #[arg(long)]
        license: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Free an activation's slot.
    Deactivate {
        activation_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum OfflineCommand {
    /// Answer an offline activation (or deactivation) request file.
    Activate {
        request: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Usage per tenant, feature and day from received reports.
    Show {
        #[arg(long, required_unless_present = "tenant")]
        license: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(long)]
    pub license: Option<String>,
    /// At most this many (the newest).
    #[arg(long, default_value_t = 200)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: Remote,
}

/// Runs `licgate authority …`; exit 0 on success, 1 with the reason otherwise.
pub fn run(command: AuthorityCommand) -> ExitCode {
    match command {
        AuthorityCommand::Serve(args) => serve(&args),
        AuthorityCommand::Check(args) => match AuthorityConfig::load(&args.config) {
            Ok(config) => {
                println!(
                    "{}: ok (listen {}, database {})",
                    args.config.display(),
                    config.listen,
                    config.database.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                for line in e.lines() {
                    eprintln!("{line}");
                }
                ExitCode::from(1)
            }
        },
        other => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("licgate: cannot start: {e}");
                    return ExitCode::from(2);
                }
            };
            super::exit_code(runtime.block_on(vendor(other)))
        }
    }
}

fn serve(args: &ConfigArgs) -> ExitCode {
    let config = match AuthorityConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::from(1);
        }
    };
    crate::logging::init(&config.log);
    match crate::authority::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "licgate::authority", error = %e, "authority failed");
            eprintln!("licgate: {e}");
            ExitCode::from(2)
        }
    }
}

fn client(remote: &Remote) -> Result<AdminClient, String> {
    AdminClient::new(&remote.url, &remote.token_file).map_err(|e| e.to_string())
}

fn failed(e: ClientError) -> String {
    e.to_string()
}

/// The JSON of a policy's options (only those given).
fn policy_spec(options: &PolicyOptions) -> Result<Value, String> {
    let mut spec = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        spec.insert(k.to_string(), v);
    };
    if let Some(tier) = &options.tier {
        put("tier", json!(tier));
    }
    if let Some(name) = &options.tier_name {
        put("tier_name", json!(name));
    }
    if !options.features.is_empty() {
        put("features", json!(options.features));
    }
    if !options.limits.is_empty() {
        put(
            "limits",
            json!(super::license::parse_limits(&options.limits)?),
        );
    }
    if !options.feature_limits.is_empty() {
        put(
            "feature_limits",
            json!(super::license::parse_feature_limits(
                &options.feature_limits
            )?),
        );
    }
    if let Some(n) = options.max_activations {
        put("max_activations", json!(n));
    }
    if options.perpetual {
        put("duration_days", json!(0));
    } else if let Some(days) = options.days {
        if days == 0 {
            return Err("--days must be at least 1 (or give --perpetual)".into());
        }
        put("duration_days", json!(days));
    }
    for (key, value) in [
        ("token_ttl", options.token_ttl),
        ("heartbeat_interval", options.heartbeat_interval),
        ("heartbeat_timeout", options.heartbeat_timeout),
    ] {
        if let Some(d) = value {
            put(key, json!(d.as_secs()));
        }
    }
    if options.floating {
        put("floating", json!(true));
    }
    if options.node_locked {
        put("floating", json!(false));
    }
    if !options.flags.is_empty() {
        put("flags", json!(options.flags));
    }
    if let Some(days) = options.grace_days {
        put("grace_days", json!(days));
    }
    if let Some(days) = options.read_only_days {
        put("read_only_days", json!(days));
    }
    Ok(Value::Object(spec))
}

async fn vendor(command: AuthorityCommand) -> Result<(), String> {
    match command {
        AuthorityCommand::Serve(_) | AuthorityCommand::Check(_) => Ok(()),
        AuthorityCommand::Policy(command) => policy(command).await,
        AuthorityCommand::License(command) => license(command).await,
        AuthorityCommand::Activation(command) => activation(command).await,
        AuthorityCommand::Offline(OfflineCommand::Activate {
            request,
            out,
            remote,
        }) => {
            let bytes = std::fs::read(&request)
                .map_err(|e| format!("cannot read {}: {e}", request.display()))?;
            let file = client(&remote)?
                .post_file("/offline", bytes)
                .await
                .map_err(failed)?;
            crate::license::store::write_atomically(&out, file.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        AuthorityCommand::Usage(UsageCommand::Show {
            license,
            tenant,
            from,
            to,
            remote,
        }) => {
            let mut query = Vec::new();
            for (k, v) in [
                ("license", license),
                ("tenant", tenant),
                ("from", from),
                ("to", to),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(&v)));
                }
            }
            let value = client(&remote)?
                .call(Method::GET, &format!("/usage?{}", query.join("&")), None)
                .await
                .map_err(failed)?;
            print(&remote, &value, |v| {
                let mut out = rows(
                    &v["rows"],
                    &[
                        "DAY", "TENANT", "FEATURE", "ALLOWED", "LIMITED", "REFUSED", "PEAK",
                    ],
                    &[
                        "day",
                        "tenant",
                        "feature",
                        "allowed",
                        "limited",
                        "refused",
                        "peak_concurrency",
                    ],
                );
                if v["seats"].as_array().is_some_and(|s| !s.is_empty()) {
                    out.push('\n');
                    out.push_str(&rows(
                        &v["seats"],
                        &["DAY", "TENANT", "PEAK SEATS", "USERS"],
                        &["day", "tenant", "peak_seats", "daily_users"],
                    ));
                }
                out
            });
            Ok(())
        }
        AuthorityCommand::Events(args) => {
            let mut path = format!("/events?limit={}", args.limit);
            if let Some(license) = &args.license {
                path.push_str(&format!("&license={}", encode(license)));
            }
            let value = client(&args.remote)?
                .call(Method::GET, &path, None)
                .await
                .map_err(failed)?;
            print(&args.remote, &value, |v| {
                let cells: Vec<Vec<String>> = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            e["id"].to_string(),
                            time_text(e["at"].as_i64().unwrap_or_default()),
                            cell(&e["actor"]),
                            cell(&e["action"]),
                            cell(&e["license_id"]),
                            cell(&e["activation_id"]),
                            e["detail"].to_string(),
                        ]
                    })
                    .collect();
                table::render(
                    &[
                        "ID",
                        "AT",
                        "ACTOR",
                        "ACTION",
                        "LICENSE",
                        "ACTIVATION",
                        "DETAIL",
                    ],
                    &cells,
                )
            });
            Ok(())
        }
    }
}

async fn policy(command: PolicyCommand) -> Result<(), String> {
    const HEADER: &[&str] = &[
        "NAME",
        "TIER",
        "FEATURES",
        "MAX",
        "DAYS",
        "TTL",
        "HEARTBEAT",
        "FLOATING",
    ];
    let policy_rows = |v: &Value| -> Vec<Vec<String>> {
        let list: Vec<&Value> = match v.get("policies") {
            Some(list) => list.as_array().into_iter().flatten().collect(),
            None => vec![v],
        };
        list.into_iter()
            .map(|p| {
                vec![
                    cell(&p["name"]),
                    cell(&p["tier"]),
                    p["features"]
                        .as_array()
                        .map(|f| f.iter().map(cell).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    cell(&p["max_activations"]),
                    p["duration_days"]
                        .as_u64()
                        .map_or("perpetual".into(), |d| d.to_string()),
                    secs(&p["token_ttl"]),
                    secs(&p["heartbeat_interval"]),
                    if p["floating"].as_bool() == Some(true) {
                        format!("yes ({})", secs(&p["heartbeat_timeout"]))
                    } else {
                        "no".into()
                    },
                ]
            })
            .collect()
    };
    let (remote, value) = match command {
        PolicyCommand::Create {
            name,
            options,
            remote,
        } => {
            let mut spec = policy_spec(&options)?;
            spec["name"] = json!(name);
            let value = client(&remote)?
                .call(Method::POST, "/policies", Some(&spec))
                .await
                .map_err(failed)?;
            (remote, value)
        }
        PolicyCommand::List { remote } => {
            let value = client(&remote)?
                .call(Method::GET, "/policies", None)
                .await
                .map_err(failed)?;
            (remote, value)
        }
        PolicyCommand::Show { name, remote } => {
            let value = client(&remote)?
                .call(Method::GET, &format!("/policies/{}", encode(&name)), None)
                .await
                .map_err(failed)?;
            (remote, value)
        }
        PolicyCommand::Update {
            name,
            rename,
            options,
            remote,
        } => {
            let mut spec = policy_spec(&options)?;
            if let Some(new_name) = rename {
                spec["name"] = json!(new_name);
            }
            let value = client(&remote)?
                .call(
                    Method::PATCH,
                    &format!("/policies/{}", encode(&name)),
                    Some(&spec),
                )
                .await
                .map_err(failed)?;
            (remote, value)
        }
    };
    print(&remote, &value, |v| table::render(HEADER, &policy_rows(v)));
    Ok(())
}

/// One line per license.
fn license_rows(v: &Value) -> String {
    let list: Vec<&Value> = match v.get("licenses") {
        Some(list) => list.as_array().into_iter().flatten().collect(),
        None => vec![v],
    };
    let cells: Vec<Vec<String>> = list
        .into_iter()
        .map(|l| {
            vec![
                cell(&l["id"]),
                cell(&l["tenant"]),
                cell(&l["policy"]),
                cell(&l["status"]),
                format!(
                    "{}/{}",
                    cell(&l["active_activations"]),
                    cell(&l["max_activations"])
                ),
                l["expires_at"].as_i64().map_or("never".into(), time_text),
                cell(&l["customer"]),
                cell(&l["key_hint"]),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "TENANT", "POLICY", "STATUS", "ACTIVE", "EXPIRES", "CUSTOMER", "KEY",
        ],
        &cells,
    )
}

async fn license(command: LicenseCommand) -> Result<(), String> {
    let (remote, value, key) = match command {
        LicenseCommand::Create {
            policy,
            tenant,
            customer,
            email,
            days,
            expires,
            max_activations,
            extra_features,
            remote,
        } => {
            let expires_at = match &expires {
                Some(text) => Some(parse_time(text).ok_or_else(|| {
                    format!("--expires {text:?} is not an RFC 3339 date-time such as 2027-01-31T23:59:59Z")
                })?),
                None => None,
            };
            let body = json!({
                "policy": policy,
                "tenant": tenant,
                "customer": customer,
                "email": email,
                "days": days,
                "expires_at": expires_at,
                "overrides": {"max_activations": max_activations, "features": extra_features},
            });
            let value = client(&remote)?
                .call(Method::POST, "/licenses", Some(&body))
                .await
                .map_err(failed)?;
            let key = value["key"].as_str().map(str::to_string);
            (remote, value, key)
        }
        LicenseCommand::List {
            tenant,
            policy,
            remote,
        } => {
            let mut query = vec!["limit=10000".to_string()];
            if let Some(t) = tenant {
                query.push(format!("tenant={}", encode(&t)));
            }
            if let Some(p) = policy {
                query.push(format!("policy={}", encode(&p)));
            }
            let value = client(&remote)?
                .call(Method::GET, &format!("/licenses?{}", query.join("&")), None)
                .await
                .map_err(failed)?;
            (remote, value, None)
        }
        LicenseCommand::Show { id, remote } => {
            let value = client(&remote)?
                .call(Method::GET, &format!("/licenses/{}", encode(&id)), None)
                .await
                .map_err(failed)?;
            if !remote.json {
                print!("{}", license_rows(&value));
                println!();
                print!("{}", activation_rows(&value["activations"]));
                return Ok(());
            }
            (remote, value, None)
        }
        LicenseCommand::Suspend { id, remote } => action(remote, &id, "suspend", None).await?,
        LicenseCommand::Reinstate { id, remote } => action(remote, &id, "reinstate", None).await?,
        LicenseCommand::Revoke { id, remote } => action(remote, &id, "revoke", None).await?,
        LicenseCommand::Renew { id, days, remote } => {
            action(remote, &id, "renew", Some(json!({"days": days}))).await?
        }
        LicenseCommand::RotateKey { id, remote } => {
            let (remote, value, _) = action(remote, &id, "rotate-key", None).await?;
            let key = value["key"].as_str().map(str::to_string);
            (remote, value, key)
        }
    };
    print(&remote, &value, license_rows);
    if let (Some(key), false) = (key, remote.json) {
        eprintln!("the license key (shown only now; the authority keeps only its hash):");
        println!("{key}");
    }
    Ok(())
}

async fn action(
    remote: Remote,
    id: &str,
    verb: &str,
    body: Option<Value>,
) -> Result<(Remote, Value, Option<String>), String> {
    let value = client(&remote)?
        .call(
            Method::POST,
            &format!("/licenses/{}/{verb}", encode(id)),
            Some(&body.unwrap_or_else(|| json!({}))),
        )
        .await
        .map_err(failed)?;
    Ok((remote, value, None))
}

fn activation_rows(list: &Value) -> String {
    let cells: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                cell(&a["id"]),
                cell(&a["license_id"]),
                cell(&a["instance_id"]),
                cell(&a["hostname"]),
                cell(&a["status"]),
                if a["offline"].as_bool() == Some(true) {
                    "offline".into()
                } else {
                    "online".into()
                },
                time_text(a["last_seen"].as_i64().unwrap_or_default()),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "LICENSE",
            "INSTANCE",
            "HOSTNAME",
            "STATUS",
            "MODE",
            "LAST SEEN",
        ],
        &cells,
    )
}

async fn activation(command: ActivationCommand) -> Result<(), String> {
    match command {
        ActivationCommand::List { license, remote } => {
            let mut path = "/activations?limit=10000".to_string();
            if let Some(license) = license {
                path.push_str(&format!("&license={}", encode(&license)));
            }
            let value = client(&remote)?
                .call(Method::GET, &path, None)
                .await
                .map_err(failed)?;
            print(&remote, &value, |v| activation_rows(&v["activations"]));
        }
        ActivationCommand::Deactivate {
            activation_id,
            remote,
        } => {
            let value = client(&remote)?
                .call(
                    Method::DELETE,
                    &format!("/activations/{}", encode(&activation_id)),
                    None,
                )
                .await
                .map_err(failed)?;
            print(&remote, &value, |v| activation_rows(&json!([v])));
        }
    }
    Ok(())
}

/// Prints `value` as JSON (`--json`) or as `table(value)`.
fn print(remote: &Remote, value: &Value, table: impl Fn(&Value) -> String) {
    if remote.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", table(value));
    }
}

/// The rows of `list` with `fields` under `header`.
fn rows(list: &Value, header: &[&str], fields: &[&str]) -> String {
    let cells: Vec<Vec<String>> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| fields.iter().map(|f| cell(&r[*f])).collect())
        .collect();
    table::render(header, &cells)
}

/// A JSON value as a table cell (`-` for null).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds as a human duration (`30days`, `1h`).
fn secs(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |s| {
        humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
    })
}

/// `text` percent-encoded for a URL path segment or query value.
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
