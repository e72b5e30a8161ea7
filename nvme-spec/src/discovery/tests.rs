use zerocopy::{FromBytes, IntoBytes};

use super::*;

#[test]
fn entry_layout() {
    let entry = DiscoveryLogEntry::tcp(
        SubsystemType::NVM,
        AddressFamily::IPV4,
        1,
        "192.168.1.10",
        "4420",
        "nqn.2016-06.io.spdk:cnode1",
    )
    .unwrap();
    let bytes = entry.as_bytes();
    assert_eq!(&bytes[0..4], &[3, 1, 2, treq::SECURE_CHANNEL_NOT_REQUIRED]);
    assert_eq!(&bytes[4..6], &1u16.to_le_bytes());
    assert_eq!(&bytes[6..8], &[0xFF, 0xFF]);
    assert_eq!(&bytes[32..37], b"4420 ");
    assert_eq!(&bytes[256..260], b"nqn.");
    assert_eq!(&bytes[512..525], b"192.168.1.10 ");
    assert_eq!(bytes[768], 0);
    let parsed = DiscoveryLogEntry::read_from_bytes(bytes).unwrap();
    assert_eq!(parsed.traddr_bytes(), b"192.168.1.10");
    assert_eq!(parsed.trsvcid_bytes(), b"4420");
    assert_eq!(parsed.subnqn_str(), Ok("nqn.2016-06.io.spdk:cnode1"));
}

#[test]
fn header_layout() {
    let header = DiscoveryLogHeader::new(7, 2);
    let bytes = header.as_bytes();
    assert_eq!(&bytes[0..8], &7u64.to_le_bytes());
    assert_eq!(&bytes[8..16], &2u64.to_le_bytes());
    assert_eq!(&bytes[16..18], &[0, 0]);
    assert_eq!(DiscoveryEntryFlags::EPCSD.bits(), 2);
}
