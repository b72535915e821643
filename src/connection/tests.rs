use std::net::{IpAddr, Ipv4Addr};

use super::*;

#[test]
fn connections_are_capped_overall_and_per_client() {
    let limits = ConnectionLimits::new(3, Some(2), vec!["10.0.0.0/8".parse().unwrap()]);
    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let a1 = limits.admit(Some(a)).unwrap();
    let _a2 = limits.admit(Some(a)).unwrap();
    assert_eq!(limits.admit(Some(a)).unwrap_err(), Refused::PerClient);
    let _b1 = limits.admit(Some(b)).unwrap();
    assert_eq!(limits.admit(Some(b)).unwrap_err(), Refused::Total);
    assert_eq!(limits.open(), 3);
    drop(a1);
    assert_eq!(limits.open(), 2);
    let _p1 = limits.admit(Some(proxy)).unwrap();
    assert_eq!(limits.admit(Some(proxy)).unwrap_err(), Refused::Total);
    drop(_p1);
    // A trusted proxy is exempt from the per-client cap (only the total counts).
    let unlimited = ConnectionLimits::new(10, Some(1), vec!["10.0.0.0/8".parse().unwrap()]);
    let _x = unlimited.admit(Some(proxy)).unwrap();
    let _y = unlimited.admit(Some(proxy)).unwrap();
    // IPv6 clients count per /64.
    let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let _c = unlimited.admit(v6("2001:db8::1")).unwrap();
    assert_eq!(
        unlimited.admit(v6("2001:db8::2")).unwrap_err(),
        Refused::PerClient
    );
    assert!(unlimited.admit(v6("2001:db8:0:1::2")).is_ok());
    drop(_c);
    assert_eq!(
        unlimited.clients(),
        0,
        "a client's entry goes with its last connection"
    );
}
