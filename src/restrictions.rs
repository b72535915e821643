//! Where a license may be used from: the networks and countries of its
//! `restrictions`, checked on the original client address (the trusted-proxy-aware
//! one), and the GeoIP database (`[geoip] database`, MaxMind format) that tells the
//! country of an address.

use std::net::IpAddr;
use std::path::Path;

use crate::license::claims::{CountryCode, Restrictions};

/// A MaxMind-format database (GeoLite2/GeoIP2 Country or City), read whole.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata.database_type)
            .finish()
    }
}

impl PartialEq for GeoIp {
    /// Two databases are the same when they were built by the same build of the same
    /// type (a reload of the same file compares equal).
    fn eq(&self, other: &GeoIp) -> bool {
        let (a, b) = (&self.reader.metadata, &other.reader.metadata);
        a.database_type == b.database_type && a.build_epoch == b.build_epoch
    }
}

impl GeoIp {
    /// Opens the database at `path`, or says why it is not one.
    pub fn open(path: &Path) -> Result<GeoIp, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("{} is not a MaxMind database: {e}", path.display()))?;
        Ok(GeoIp { reader })
    }

    /// The country of `ip` (`country.iso_code`), when the database knows it.
    /// Allocation-free.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let found = self.reader.lookup(ip).ok()?;
        let code: Option<&str> = found
            .decode_path(&[
                maxminddb::PathElement::Key("country"),
                maxminddb::PathElement::Key("iso_code"),
            ])
            .ok()?;
        CountryCode::parse(code?)
    }
}

/// Why a client may not use the license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkRefusal {
    /// The client's address is unknown (not TCP/IP).
    NoAddress,
    /// The address is in a denied network.
    Denied(IpAddr),
    /// The address is in no allowed network and not in an allowed country (`None`:
    /// the country is unknown or not looked up).
    NotAllowed(IpAddr, Option<CountryCode>),
}

/// Whether a client at `client` may use a license with `restrictions`.
///
/// A denied network refuses. With allow lists, the address must be in an allowed
/// network or (with a GeoIP database) in an allowed country; with
/// `allowed_countries` alone and no database, countries are not checked. IPv4
/// addresses mapped into IPv6 (`::ffff:a.b.c.d`) count as the IPv4 address.
pub fn permits(
    restrictions: &Restrictions,
    client: Option<IpAddr>,
    geoip: Option<&GeoIp>,
) -> Result<(), NetworkRefusal> {
    let ip = client
        .map(|ip| ip.to_canonical())
        .ok_or(NetworkRefusal::NoAddress)?;
    if restrictions.denied_networks.iter().any(|n| n.contains(&ip)) {
        return Err(NetworkRefusal::Denied(ip));
    }
    let by_network = !restrictions.allowed_networks.is_empty();
    let by_country = !restrictions.allowed_countries.is_empty() && geoip.is_some();
    if !by_network && !by_country {
        return Ok(());
    }
    if restrictions
        .allowed_networks
        .iter()
        .any(|n| n.contains(&ip))
    {
        return Ok(());
    }
    let country = geoip.filter(|_| by_country).and_then(|db| db.country(ip));
    match country {
        Some(c) if restrictions.allowed_countries.contains(&c) => Ok(()),
        _ => Err(NetworkRefusal::NotAllowed(ip, country)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restrictions(allowed: &[&str], denied: &[&str]) -> Restrictions {
        Restrictions {
            allowed_networks: allowed.iter().map(|n| n.parse().unwrap()).collect(),
            denied_networks: denied.iter().map(|n| n.parse().unwrap()).collect(),
            allowed_countries: vec![],
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn allowed_and_denied_networks_v4_and_v6() {
        let r = restrictions(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"]);
        assert_eq!(permits(&r, ip("10.1.2.3"), None), Ok(()));
        assert_eq!(permits(&r, ip("2001:db8::7"), None), Ok(()));
        assert!(matches!(
            permits(&r, ip("10.9.1.1"), None),
            Err(NetworkRefusal::Denied(_))
        ));
        assert!(matches!(
            permits(&r, ip("192.0.2.1"), None),
            Err(NetworkRefusal::NotAllowed(_, None))
        ));
        assert!(permits(&r, ip("2001:db9::1"), None).is_err());
        assert_eq!(permits(&r, None, None), Err(NetworkRefusal::NoAddress));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let r = restrictions(&[], &["192.0.2.0/24"]);
        assert!(permits(&r, ip("::ffff:192.0.2.9"), None).is_err());
        let r = restrictions(&["192.0.2.0/24"], &[]);
        assert_eq!(permits(&r, ip("::ffff:192.0.2.9"), None), Ok(()));
    }

    #[test]
    fn countries_without_a_database_are_not_checked() {
        let r = Restrictions {
            allowed_countries: vec![CountryCode::parse("de").unwrap()],
            ..Restrictions::default()
        };
        assert_eq!(permits(&r, ip("192.0.2.1"), None), Ok(()));
    }

    #[test]
    fn combined_licenses_allow_either_and_deny_both() {
        let a = restrictions(&["10.0.0.0/8"], &["10.9.0.0/16"]);
        let b = restrictions(&["192.168.0.0/16"], &[]);
        let both = a.combine(&b);
        assert_eq!(permits(&both, ip("192.168.1.1"), None), Ok(()));
        assert!(permits(&both, ip("10.9.0.1"), None).is_err());
        let open = a.combine(&Restrictions::default());
        assert_eq!(permits(&open, ip("203.0.113.1"), None), Ok(()));
        assert!(permits(&open, ip("10.9.0.1"), None).is_err());
    }
}
