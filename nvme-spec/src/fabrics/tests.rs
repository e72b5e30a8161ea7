use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::{Completion, PropertyOffset, Status};

#[test]
fn connect_command_layout() {
    let connect = ConnectCommand::new(0x1234, 0, 31, 120_000);
    let cmd: Command = connect.into();
    assert!(cmd.is_fabrics());
    assert_eq!(cmd.fctype(), FabricsCommandType::CONNECT);
    assert_eq!(cmd.cid(), 0x1234);
    assert_eq!(cmd.sgl1(), SglDescriptor::transport(1024));
    let bytes = cmd.as_bytes();
    assert_eq!(bytes[4], 0x01);
    assert_eq!(&bytes[42..44], &0u16.to_le_bytes());
    assert_eq!(&bytes[44..46], &31u16.to_le_bytes());
    assert_eq!(&bytes[48..52], &120_000u32.to_le_bytes());
    let back = ConnectCommand::from_command(&cmd);
    assert_eq!(back, connect);
    assert_eq!((back.qid, back.sqsize, back.kato), (0, 31, 120_000));
    assert!(!back.sq_flow_control_disabled());
}

#[test]
fn connect_data_nqns() {
    let host = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
    let data =
        ConnectData::new([7; 16], CNTLID_DYNAMIC, "nqn.2016-06.io.spdk:cnode1", host).unwrap();
    let bytes = data.as_bytes();
    assert_eq!(&bytes[16..18], &[0xFF, 0xFF]);
    assert_eq!(&bytes[256..260], b"nqn.");
    assert_eq!(&bytes[512..516], b"nqn.");
    let parsed = ConnectData::read_from_bytes(bytes).unwrap();
    assert_eq!(parsed.subnqn_str(), Ok("nqn.2016-06.io.spdk:cnode1"));
    assert_eq!(parsed.hostnqn_str(), Ok(host));

    let mut bad = parsed;
    bad.subnqn = [b'a'; 256];
    assert_eq!(bad.subnqn_str(), Err(NqnError::NotTerminated));
    bad.subnqn[0] = 0xFF;
    bad.subnqn[1] = 0;
    assert_eq!(bad.subnqn_str(), Err(NqnError::InvalidUtf8));
    let long = "x".repeat(256);
    assert!(matches!(
        ConnectData::new([0; 16], 0, &long, host),
        Err(NqnError::TooLong { .. })
    ));
}

#[test]
fn connect_response_dwords() {
    assert_eq!(connect_response_dw0(5, AuthReq::empty()), 5);
    // Linux host: NVME_CONNECT_AUTHREQ_ATR = 1 << 17, ASCR = 1 << 18.
    assert_eq!(connect_response_dw0(5, AuthReq::ATR), 5 | 1 << 17);
    assert_eq!(connect_response_dw0(5, AuthReq::ASCR), 5 | 1 << 18);
    let data_err =
        connect_invalid_parameter_dw0(ConnectInvalidParameter::Data(connect_offsets::HOSTNQN));
    assert_eq!(data_err, 512 | 1 << 16);
    let sqe_err =
        connect_invalid_parameter_dw0(ConnectInvalidParameter::Command(connect_offsets::SQSIZE));
    assert_eq!(sqe_err, 44);
    let cqe = Completion::new(1, Status::CONNECT_INVALID_PARAMETERS.with_dnr()).with_dw0(data_err);
    assert_eq!(cqe.status().code(), Status::CONNECT_INVALID_PARAMETERS);
}

#[test]
fn property_commands() {
    let set = PropertyCommand::set(2, PropertyOffset::CC.0, PropertySize::Four, 0x0046_0001);
    let cmd: Command = set.into();
    assert_eq!(cmd.fctype(), FabricsCommandType::PROPERTY_SET);
    let bytes = cmd.as_bytes();
    assert_eq!(bytes[40], 0);
    assert_eq!(&bytes[44..48], &0x14u32.to_le_bytes());
    assert_eq!(&bytes[48..56], &0x0046_0001u64.to_le_bytes());
    let back = PropertyCommand::from_command(&cmd);
    assert_eq!(back.size(), Some(PropertySize::Four));
    assert_eq!(back.value, 0x0046_0001);

    let get = PropertyCommand::get(3, PropertyOffset::CAP.0, PropertySize::Eight);
    assert_eq!(
        Command::from(get).fctype(),
        FabricsCommandType::PROPERTY_GET
    );
    assert_eq!(get.size(), Some(PropertySize::Eight));
    assert_eq!(get.size().map(PropertySize::bytes), Some(8));
    assert_eq!(PropertySize::from_attrib(2), None);
}
