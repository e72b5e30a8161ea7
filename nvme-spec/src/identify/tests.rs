use zerocopy::IntoBytes;

use super::*;
use crate::{IdentifyController, Sgls};

#[test]
fn identify_command_fields() {
    let id = Identify {
        nsid: 0,
        cns: Cns::CSI_CONTROLLER,
        cntid: 0x12,
        cnssid: 0,
        csi: Csi::NVM,
        uuid_index: 0,
    };
    let cmd = id.to_command(4);
    assert_eq!(cmd.opcode, AdminOpcode::IDENTIFY.0);
    assert_eq!(cmd.cdw10, 0x0012_0006);
    assert_eq!(Identify::parse(&cmd), id);
    let mut zns = cmd;
    zns.cdw11 = 0x0200_0000;
    assert_eq!(Identify::parse(&zns).csi, Csi::ZONED);
}

#[test]
fn ns_id_descriptor_list() {
    let mut buf = [0xAAu8; IDENTIFY_DATA_LEN];
    let ids = NsIdDescriptors {
        eui64: Some([1, 2, 3, 4, 5, 6, 7, 8]),
        nguid: Some([0x11; 16]),
        uuid: Some([0x22; 16]),
        csi: Some(Csi::NVM),
    };
    let used = ids.write_to(&mut buf);
    assert_eq!(used, (4 + 8) + (4 + 16) + (4 + 16) + (4 + 1));
    assert_eq!(&buf[0..4], &[1, 8, 0, 0]);
    assert_eq!(&buf[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&buf[12..16], &[2, 16, 0, 0]);
    assert_eq!(&buf[32..36], &[3, 16, 0, 0]);
    assert_eq!(&buf[52..57], &[4, 1, 0, 0, 0]);
    assert!(buf[used..].iter().all(|&b| b == 0));

    let parsed: Vec<_> = NsIdDescriptors::iter(&buf).collect();
    assert_eq!(parsed.len(), 4);
    assert_eq!(parsed[1], (NsIdType::NGUID, &[0x11u8; 16][..]));
    for (nidt, nid) in parsed {
        assert_eq!(nidt.length(), Some(nid.len()));
    }

    let only_uuid = NsIdDescriptors {
        uuid: Some([9; 16]),
        ..NsIdDescriptors::default()
    };
    assert_eq!(only_uuid.write_to(&mut buf), 20);
    assert_eq!(NsIdDescriptors::iter(&buf).count(), 1);
}

#[test]
fn active_list_pages() {
    let active = [1, 2, 5, 9];
    let list = active_ns_list(&active, 0);
    assert_eq!(&list[..5], &[1, 2, 5, 9, 0]);
    let list = active_ns_list(&active, 2);
    assert_eq!(&list[..3], &[5, 9, 0]);
    assert!(active_ns_list(&active, 9).iter().all(|&n| n == 0));
    let many: Vec<u32> = (1..=2000).collect();
    let page = active_ns_list(&many, 0);
    assert_eq!(page[1023], 1024);
}

#[test]
fn namespace_fields() {
    let mut ns = IdentifyNamespace::zeroed();
    ns.nsze = 1 << 20;
    ns.lbaf[0] = LbaFormat::new(9, 0);
    ns.lbaf[17] = LbaFormat::new(12, 8);
    ns.nlbaf = 17;
    ns.set_flbas_index(17);
    assert_eq!(ns.flbas, 0b0010_0001);
    assert_eq!(ns.flbas_index(), 17);
    assert_eq!(ns.lba_format().block_size(), Some(4096));
    assert_eq!(LbaFormat::new(0, 0).block_size(), None);
    ns.nguid = [0x5A; 16];
    ns.set_nvmcap(u128::MAX - 1);
    assert_eq!(ns.nvmcap(), u128::MAX - 1);
    let bytes = ns.as_bytes();
    assert_eq!(&bytes[0..8], &(1u64 << 20).to_le_bytes());
    assert_eq!(bytes[26], 0b0010_0001);
    assert_eq!(&bytes[104..120], &[0x5A; 16]);
    assert_eq!(&bytes[128 + 17 * 4..128 + 18 * 4], &[8, 0, 12, 0]);
}

#[test]
fn controller_fields() {
    let mut id = IdentifyController::zeroed();
    id.set_sn("SN123");
    id.set_mn("Ferrox");
    id.set_fr("0.1.0-very-long");
    id.set_subnqn("nqn.2016-06.io.spdk:cnode1").unwrap();
    id.cntlid = 7;
    id.kas = 100;
    id.nn = 32;
    id.sgls = (Sgls::SUPPORTED | Sgls::OFFSET | Sgls::TRANSPORT_DATA_BLOCK).bits();
    id.ioccsz = 4;
    id.iorcsz = 1;
    id.psd[0].mp = 2500;
    id.set_tnvmcap(1 << 40);
    let bytes = id.as_bytes();
    assert_eq!(&bytes[4..24], b"SN123               ");
    assert_eq!(&bytes[24..30], b"Ferrox");
    assert_eq!(&bytes[64..72], b"0.1.0-ve");
    assert_eq!(&bytes[78..80], &7u16.to_le_bytes());
    assert_eq!(&bytes[280..296], &(1u128 << 40).to_le_bytes());
    assert_eq!(&bytes[320..322], &100u16.to_le_bytes());
    assert_eq!(&bytes[516..520], &32u32.to_le_bytes());
    assert_eq!(&bytes[536..540], &0x0030_0001u32.to_le_bytes());
    assert_eq!(&bytes[768..794], b"nqn.2016-06.io.spdk:cnode1");
    assert_eq!(bytes[794], 0);
    assert_eq!(&bytes[1792..1800], &[4, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&bytes[2048..2050], &2500u16.to_le_bytes());
    assert_eq!(id.subnqn_str(), Ok("nqn.2016-06.io.spdk:cnode1"));
}
