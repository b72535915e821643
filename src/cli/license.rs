//! The vendor's commands: `licgate license keygen | issue | inspect`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::license::sign;
use clap::{Args, Subcommand};

use crate::license::claims::{
    Claims, CountryCode, FeatureLimits, Restrictions, FEATURE_LIMIT_NAMES,
};
use crate::license::clock::{Clock, SystemClock};
use crate::license::keys::{self, spki_algorithm, PublicKey, SigningKey};
use crate::license::store::generate_instance_id;
use crate::license::verify::unverified_claims;
use crate::license::{parse_time, time_text, StatusPolicy, UnixTime, Verifier};

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Generate an Ed25519 vendor key pair (vendor.key.pem, mode 0600; vendor.pub.pem).
    #[command(after_help = "Example:\n  licgate license keygen --out keys/")]
    Keygen {
        /// Directory for the key files (created if missing; existing keys are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a license and print the token.
    #[command(
        after_help = "Example:\n  licgate license issue --signing-key keys/vendor.key.pem --tenant default \\\n    --tier professional --feature sales --feature hr \\\n    --limit requests_per_hour=5000 --days 365 --audience 3f2a..."
    )]
    Issue(Box<IssueArgs>),
    /// Show a token's claims, signature verdict and status now.
    #[command(
        after_help = "Examples:\n  licgate license inspect customer.jwt --public-key keys/vendor.pub.pem\n  echo \"$TOKEN\" | licgate license inspect -"
    )]
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// PKCS#8 PEM private key (Ed25519 → EdDSA, P-256 → ES256, RSA → RS256).
    #[arg(long)]
    pub signing_key: PathBuf,
    /// Tenant the license covers ("default" in single-tenant mode).
    #[arg(long)]
    pub tenant: String,
    /// Plan code, e.g. "professional".
    #[arg(long)]
    pub tier: String,
    /// Plan display name, e.g. "Professional".
    #[arg(long)]
    pub tier_name: Option<String>,
    /// A granted feature (repeatable).
    #[arg(long = "feature", value_name = "FEATURE")]
    pub features: Vec<String>,
    /// A limit NAME=N (repeatable): requests_per_minute, requests_per_hour,
    /// requests_per_day, requests_per_month (counts per calendar window, UTC),
    /// requests_per_second, burst (optional smoothing), max_concurrent_connections,
    /// max_users, max_seats, max_active_users, overage (a factor such as 1.25).
    #[arg(long = "limit", value_name = "NAME=N")]
    pub limits: Vec<String>,
    /// A per-feature quota FEATURE:NAME=N (repeatable): NAME is requests_per_minute,
    /// requests_per_hour, requests_per_day or requests_per_month.
    #[arg(long = "feature-limit", value_name = "FEATURE:NAME=N")]
    pub feature_limits: Vec<String>,
    /// Expiry as RFC 3339, e.g. 2027-01-31T23:59:59Z.
    #[arg(long, conflicts_with = "days", required_unless_present = "days")]
    pub expires: Option<String>,
    /// Expiry in days from now.
    #[arg(long)]
    pub days: Option<u32>,
    /// Not valid before (RFC 3339). Default: no restriction.
    #[arg(long)]
    pub not_before: Option<String>,
    /// Instance id the license is bound to (repeatable). Default: "*" (any instance).
    #[arg(long = "audience", value_name = "ID")]
    pub audiences: Vec<String>,
    /// A flag such as trial or non_production (repeatable).
    #[arg(long = "flag", value_name = "FLAG")]
    pub flags: Vec<String>,
    /// Only clients in this network (CIDR, IPv4 or IPv6; repeatable).
    #[arg(long = "allowed-network", value_name = "CIDR")]
    pub allowed_networks: Vec<String>,
    /// Never clients in this network (CIDR; repeatable).
    #[arg(long = "denied-network", value_name = "CIDR")]
    pub denied_networks: Vec<String>,
    /// Only clients in this country (ISO 3166-1 alpha-2, e.g. DE; repeatable; the
    /// gateway needs a GeoIP database for it).
    #[arg(long = "allowed-country", value_name = "CC")]
    pub allowed_countries: Vec<String>,
    /// Issuer (`iss`), e.g. the vendor's name.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Customer id (`sub`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Key id put in the header (selects the public key on the gateway).
    #[arg(long)]
    pub kid: Option<String>,
    /// License id (`jti`). Default: a random id.
    #[arg(long)]
    pub jti: Option<String>,
    /// Grace days after expiry (overrides the gateway's default).
    #[arg(long)]
    pub grace_days: Option<u32>,
    /// Read-only days after grace (overrides the gateway's default).
    #[arg(long)]
    pub read_only_days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The token itself, a file holding it, or - for standard input.
    pub token: String,
    /// Public key(s) to verify the signature with (PEM; algorithm detected).
    #[arg(long = "public-key", value_name = "PEM")]
    pub public_keys: Vec<PathBuf>,
    /// Check that the license is bound to this instance id.
    #[arg(long)]
    pub instance_id: Option<String>,
}

/// Runs a `licgate license ...` command.
pub fn run(command: LicenseCommand) -> ExitCode {
    let result = match command {
        LicenseCommand::Keygen { out } => keygen(&out),
        LicenseCommand::Issue(args) => issue(&args, SystemClock.now()),
        LicenseCommand::Inspect(args) => return inspect(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("licgate: {message}");
            ExitCode::from(1)
        }
    }
}

fn keygen(out: &Path) -> Result<(), String> {
    let pair = keys::generate_ed25519();
    let (private, public) = keys::write_key_pair(out, &pair).map_err(|e| e.to_string())?;
    println!(
        "private key: {} (keep it secret; mode 0600)",
        private.display()
    );
    println!("public key:  {}", public.display());
    println!();
    println!("Ship the public key with the gateway:");
    println!(
        "  [license]\n  public_keys = [{{ path = \"{}\", alg = \"EdDSA\" }}]",
        public.display()
    );
    println!("Issue a license:");
    println!(
        "  licgate license issue --signing-key {} --tenant default --tier professional --days 365",
        private.display()
    );
    Ok(())
}

/// Builds the claims for `args` at `now` (validation of every flag happens here).
pub fn issue_claims(args: &IssueArgs, now: UnixTime) -> Result<Claims, String> {
    let exp = match (&args.expires, args.days) {
        (Some(text), _) => parse_time(text).ok_or_else(|| {
            format!("--expires {text:?} is not an RFC 3339 date-time such as 2027-01-31T23:59:59Z")
        })?,
        (None, Some(days)) => now + i64::from(days) * 86_400,
        (None, None) => return Err("give --expires or --days".into()),
    };
    let nbf = match &args.not_before {
        Some(text) => Some(
            parse_time(text)
                .ok_or_else(|| format!("--not-before {text:?} is not an RFC 3339 date-time"))?,
        ),
        None => None,
    };
    if let Some(nbf) = nbf {
        if nbf >= exp {
            return Err("--not-before must be earlier than the expiry".into());
        }
    }
    let limits = parse_limits(&args.limits)?;
    let feature_limits = parse_feature_limits(&args.feature_limits)?;
    if args.tenant.trim().is_empty() {
        return Err("--tenant must not be empty".into());
    }
    let mut features = args.features.clone();
    features.sort();
    features.dedup();
    Ok(Claims {
        iss: args.issuer.clone(),
        sub: args.subject.clone(),
        aud: if args.audiences.is_empty() {
            vec!["*".into()]
        } else {
            args.audiences.clone()
        },
        jti: args
            .jti
            .clone()
            .unwrap_or_else(|| format!("lic-{}", generate_instance_id())),
        iat: Some(now),
        nbf,
        exp,
        tenant: args.tenant.clone(),
        tier: Some(args.tier.clone()),
        tier_name: args.tier_name.clone(),
        features,
        limits,
        feature_limits,
        restrictions: parse_restrictions(args)?,
        flags: args.flags.clone(),
        grace_days: args.grace_days,
        read_only_days: args.read_only_days,
        license_exp: None,
    })
}

/// `--allowed-network`, `--denied-network` and `--allowed-country` as restrictions.
fn parse_restrictions(args: &IssueArgs) -> Result<Restrictions, String> {
    let networks = |option: &str, specs: &[String]| {
        specs
            .iter()
            .map(|spec| {
                spec.trim().parse::<ipnet::IpNet>().map_err(|_| {
                    format!("--{option} {spec:?}: expected a network such as 10.0.0.0/8 or 2001:db8::/32")
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Restrictions {
        allowed_networks: networks("allowed-network", &args.allowed_networks)?,
        denied_networks: networks("denied-network", &args.denied_networks)?,
        allowed_countries: args
            .allowed_countries
            .iter()
            .map(|spec| {
                CountryCode::parse(spec.trim()).ok_or_else(|| {
                    format!("--allowed-country {spec:?}: expected a two-letter code such as DE")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// `--limit NAME=N` options as limits.
pub(crate) fn parse_limits(specs: &[String]) -> Result<crate::license::Limits, String> {
    let mut limits = crate::license::Limits::default();
    for spec in specs {
        let (name, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("--limit {spec:?}: expected NAME=N"))?;
        limits
            .set_text(name.trim(), value)
            .map_err(|problem| format!("--limit {spec:?}: {problem}"))?;
    }
    Ok(limits)
}

/// `--feature-limit FEATURE:NAME=N` options as per-feature limits.
pub(crate) fn parse_feature_limits(
    specs: &[String],
) -> Result<std::collections::BTreeMap<String, FeatureLimits>, String> {
    let mut feature_limits = std::collections::BTreeMap::new();
    for spec in specs {
        let bad = || {
            format!(
                "--feature-limit {spec:?}: expected FEATURE:NAME=N, NAME being one of {}",
                FEATURE_LIMIT_NAMES.join(", ")
            )
        };
        let (feature, rest) = spec.split_once(':').ok_or_else(bad)?;
        let (name, value) = rest.split_once('=').ok_or_else(bad)?;
        let value: u64 = value.trim().parse().map_err(|_| bad())?;
        let entry: &mut FeatureLimits = feature_limits
            .entry(feature.trim().to_string())
            .or_default();
        if !entry.set(name.trim(), value) {
            return Err(bad());
        }
    }
    Ok(feature_limits)
}

fn issue(args: &IssueArgs, now: UnixTime) -> Result<(), String> {
    let key = SigningKey::load(&args.signing_key).map_err(|e| e.to_string())?;
    let claims = issue_claims(args, now)?;
    let token = sign(&claims, &key, args.kid.as_deref()).map_err(|e| e.to_string())?;
    if args.audiences.is_empty() {
        eprintln!(
            "note: not bound to an instance (aud = \"*\"); bind it with --audience <instance id>"
        );
    }
    eprintln!(
        "issued {} for tenant {} ({}), {} until {}",
        claims.jti,
        claims.tenant,
        key.alg,
        claims.tier.as_deref().unwrap_or(""),
        time_text(claims.exp)
    );
    println!("{token}");
    Ok(())
}

/// Reads the token argument: `-` = stdin, an existing file = its contents, else the text.
fn read_token_argument(arg: &str) -> Result<String, String> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .take(crate::license::verify::MAX_TOKEN_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(text.trim().to_string());
    }
    let path = Path::new(arg);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read {arg}: {e}"));
    }
    Ok(arg.trim().to_string())
}

fn inspect(args: &InspectArgs) -> ExitCode {
    let token = match read_token_argument(&args.token) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("licgate: {e}");
            return ExitCode::from(1);
        }
    };
    let mut keys = Vec::new();
    for path in &args.public_keys {
        let alg = std::fs::read(path)
            .ok()
            .and_then(|pem| spki_algorithm(&pem))
            .unwrap_or(crate::license::Algorithm::EdDSA);
        match PublicKey::load(path, alg, None) {
            Ok(k) => keys.push(k),
            Err(e) => {
                eprintln!("licgate: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match unverified_claims(&token) {
        Some((header, payload)) => {
            println!("header: {}", serde_json::Value::Object(header));
            println!(
                "claims:\n{}",
                serde_json::to_string_pretty(&payload).unwrap_or_default()
            );
        }
        None => println!("header/claims: not readable (not a JWT)"),
    }
    let now = SystemClock.now();
    let policy = StatusPolicy::default();
    let mut ok = true;
    let verdict = if keys.is_empty() {
        "not checked (give --public-key to verify)".to_string()
    } else {
        let verifier = match &args.instance_id {
            Some(id) => Verifier::new(keys, None, id.clone(), 0),
            None => Verifier::without_audience_check(keys),
        };
        match verifier.verify(&token) {
            Ok(license) => format!(
                "valid ({}{})",
                license.alg,
                if args.instance_id.is_some() {
                    ", bound to this instance"
                } else {
                    ""
                }
            ),
            Err(reason) => {
                ok = false;
                format!("REJECTED: {reason}")
            }
        }
    };
    println!("signature: {verdict}");
    match unverified_claims(&token).and_then(|(_, payload)| Claims::try_from(&payload).ok()) {
        Some(claims) => {
            let (status, next) = policy.status_of(&claims, now);
            let next = next
                .map(|t| format!(", next change {}", time_text(t)))
                .unwrap_or_default();
            println!(
                "status now: {status} (expires {}{next}; default thresholds: warn {}d, grace {}d, read-only {}d)",
                time_text(claims.exp),
                policy.expiry_warning_days,
                claims.grace_days.unwrap_or(policy.grace_days),
                claims.read_only_days.unwrap_or(policy.read_only_days)
            );
        }
        None => {
            ok = false;
            match unverified_claims(&token).map(|(_, p)| Claims::try_from(&p)) {
                Some(Err(e)) => println!("status now: INVALID ({e})"),
                _ => println!("status now: INVALID (not a license token)"),
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
