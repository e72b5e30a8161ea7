use zerocopy::{FromBytes, IntoBytes};

use super::*;

#[test]
fn io_fields() {
    let cmd = Command::write(7, 1, 0x1_2345_6789, 15).with_fua(true);
    assert_eq!(cmd.opcode(), IoOpcode::WRITE.0);
    assert_eq!(cmd.cid(), 7);
    assert_eq!(cmd.nsid(), 1);
    assert_eq!(cmd.cdw10(), 0x2345_6789);
    assert_eq!(cmd.cdw11(), 0x1);
    assert_eq!(cmd.slba(), 0x1_2345_6789);
    assert_eq!(cmd.nlb(), 15);
    assert_eq!(cmd.block_count(), 16);
    assert!(cmd.fua());
    assert_eq!(cmd.cdw12(), 15 | 1 << 30);
    assert!(!cmd.with_fua(false).fua());
    assert!(!cmd.limited_retry());
}

#[test]
fn byte_layout() {
    let mut cmd = Command::read(0xBEEF, 0x0102_0304, u64::MAX, 0xFFFF);
    cmd.flags = 0x40;
    let bytes = cmd.as_bytes();
    assert_eq!(bytes[0], 0x02);
    assert_eq!(bytes[1], 0x40);
    assert_eq!(&bytes[2..4], &[0xEF, 0xBE]);
    assert_eq!(&bytes[4..8], &[4, 3, 2, 1]);
    assert_eq!(&bytes[40..48], &[0xFF; 8]);
    assert_eq!(&bytes[48..50], &[0xFF, 0xFF]);
    assert_eq!(Command::read_from_bytes(bytes).unwrap(), cmd);
    assert_eq!(cmd.psdt(), psdt::SGL_MPTR_CONTIGUOUS);
}

#[test]
fn sgl_descriptors() {
    let in_capsule = SglDescriptor::in_capsule(0, 4096);
    assert_eq!(in_capsule.identifier, 0x01);
    assert!(in_capsule.is_in_capsule());
    let transport = SglDescriptor::transport(8192);
    assert_eq!(transport.identifier, 0x5A);
    assert_eq!(transport.sgl_type(), SglType::TRANSPORT_DATA_BLOCK);
    assert_eq!(transport.subtype(), SglSubtype::TRANSPORT_SPECIFIC);

    let cmd = Command::read(1, 1, 0, 0).with_sgl1(transport);
    assert_eq!(cmd.psdt(), psdt::SGL_MPTR_CONTIGUOUS);
    assert_eq!(cmd.sgl1(), transport);
    // SGL1 occupies SQE bytes 24..40 with the identifier in byte 39.
    let bytes = cmd.as_bytes();
    assert_eq!(&bytes[32..36], &8192u32.to_le_bytes());
    assert_eq!(bytes[39], 0x5A);
    assert_eq!(&bytes[24..40], transport.as_bytes());
}

#[test]
fn fabrics_header() {
    let cmd = Command::disconnect(3);
    assert!(cmd.is_fabrics());
    assert_eq!(cmd.fctype(), FabricsCommandType::DISCONNECT);
    assert_eq!(format!("{:?}", cmd.admin_opcode()), "FABRICS");
    assert_eq!(format!("{:?}", AdminOpcode(0x99)), "AdminOpcode(0x99)");
    assert_eq!(IoOpcode::READ.data_transfer(), 0b10);
}

#[test]
fn dsm_fields() {
    let mut cmd = Command::new(IoOpcode::DATASET_MANAGEMENT.0, 1);
    cmd.cdw10 = 3;
    cmd.cdw11 = 1 << 2;
    assert_eq!(cmd.dsm_range_count(), 4);
    assert!(cmd.dsm_attributes().contains(crate::DsmAttributes::AD));
    let mut wz = Command::write_zeroes(1, 1, 0, 7);
    wz.cdw12 |= 1 << 25;
    assert!(wz.deac());
}
