use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn per_peer_and_total_caps_hold_and_permits_give_places_back() {
    let l = Arc::new(ConnLimits::new(3, 2));
    let a1 = l.admit(ip(1)).unwrap();
    let _a2 = l.admit(ip(1)).unwrap();
    assert_eq!(l.admit(ip(1)).unwrap_err(), Refusal::PerPeer(2));
    let _b1 = l.admit(ip(2)).unwrap();
    assert_eq!(l.admit(ip(3)).unwrap_err(), Refusal::Total(3));
    assert_eq!((l.open(), l.refused()), (3, 2));
    drop(a1);
    assert_eq!(l.open(), 2);
    let _a3 = l.admit(ip(1)).unwrap();
    assert_eq!(l.admit(ip(2)).unwrap_err(), Refusal::Total(3));
    assert_eq!(l.refused(), 3);
}

#[test]
fn new_caps_apply_to_later_connections() {
    let l = Arc::new(ConnLimits::new(10, 10));
    let held: Vec<_> = (0..4).map(|_| l.admit(ip(1)).unwrap()).collect();
    l.set(10, 2);
    assert_eq!(l.admit(ip(1)).unwrap_err(), Refusal::PerPeer(2));
    drop(held);
    assert_eq!(l.open(), 0);
    assert!(l.admit(ip(1)).is_ok());
}
