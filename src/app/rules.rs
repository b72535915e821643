//! Everything the request path derives from the configuration file: built once per
//! (re)load and swapped whole, so a request sees one consistent configuration from
//! its first phase to its last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use crate::config::{Config, Mode, OdooConfig, TenantsConfig, UpstreamConfig};
use crate::forwarding::ForwardingPolicy;
use crate::pages::{TemplateError, Templates};
use crate::policy::decide::Policy;
use crate::policy::model::ModelMap;
use crate::policy::path::PathOptions;
use crate::policy::tenant::TenantResolver;

/// The configuration-derived rules of the request path.
pub(crate) struct Rules {
    pub mode: Mode,
    pub policy: Policy,
    /// The feature map's Odoo models (empty: RPC bodies are not inspected).
    pub models: ModelMap,
    /// `[odoo]`: whether Odoo's endpoints are recognized, and the largest RPC body read.
    pub odoo: OdooConfig,
    pub paths: PathOptions,
    pub tenants: TenantResolver,
    pub templates: Templates,
    /// Where the activation form sends the browser once a license is installed.
    pub after_activation: String,
    /// `pages.public_status`: the full summary on `/_licgate/status`.
    pub public_status: bool,
    /// `pages.flag_banner`.
    pub flag_banner: bool,
    /// `[geoip] database`, for `restrictions.allowed_countries`.
    pub geoip: Option<Arc<crate::restrictions::GeoIp>>,
    /// `[seats]`: where a person is recognized, and how long seats last.
    pub seats: Option<crate::seats::identity::SeatRules>,
    pub forwarding: ForwardingPolicy,
    /// The upstream peer, cloned for each request.
    pub peer: HttpPeer,
    /// Whether one access-log line is written per request (`log.access`).
    pub access_log: bool,
    /// The longest pause in a request body while the request holds a concurrent
    /// slot (`server.header_timeout`).
    pub body_gap: Duration,
}

impl Rules {
    /// The rules of `config`, sending requests to `upstream_addr` (the resolved
    /// `upstream.address`). Fails when a page in `pages.templates_dir` cannot be read
    /// or does not compile.
    pub(crate) fn new(config: &Config, upstream_addr: SocketAddr) -> Result<Rules, TemplateError> {
        Ok(Rules {
            mode: config.mode,
            policy: Policy::new(
                config.mode,
                &config.features,
                &config.public_paths,
                config.paths.case_insensitive,
            ),
            models: ModelMap::new(config.model_rules.clone()),
            odoo: config.odoo,
            paths: config.paths,
            tenants: TenantResolver::new(&config.tenants, &config.server.trusted_proxies),
            templates: Templates::load(config.pages.templates_dir.as_deref())?,
            after_activation: config.pages.after_activation.clone(),
            public_status: config.pages.public_status,
            flag_banner: config.pages.flag_banner,
            geoip: config.geoip.clone(),
            seats: config.seats.as_ref().map(|seats| {
                crate::seats::identity::SeatRules::new(
                    seats,
                    &config.tenants,
                    &config.server.trusted_proxies,
                )
            }),
            forwarding: ForwardingPolicy {
                trusted_proxies: config.server.trusted_proxies.clone(),
                host_header: config.upstream.host_header.clone(),
                tenant_header: match &config.tenants {
                    TenantsConfig::Header { name } => Some(name.clone()),
                    _ => None,
                },
            },
            peer: upstream_peer(&config.upstream, upstream_addr),
            access_log: crate::logging::access_enabled(&config.log),
            body_gap: config.server.header_timeout,
        })
    }
}

/// Builds the upstream peer template from the upstream configuration.
fn upstream_peer(upstream: &UpstreamConfig, addr: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, upstream.tls, upstream.sni.clone());
    let options = &mut peer.options;
    options.connection_timeout = Some(upstream.connect_timeout);
    options.total_connection_timeout = Some(upstream.connect_timeout);
    options.read_timeout = Some(upstream.read_timeout);
    options.write_timeout = Some(upstream.write_timeout);
    options.idle_timeout = Some(upstream.idle_timeout);
    options.verify_cert = upstream.verify_cert;
    options.verify_hostname = upstream.verify_cert;
    peer
}
