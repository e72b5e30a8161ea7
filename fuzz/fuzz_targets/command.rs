//! Parses an NVMe command (and what follows as its data) with every parser the target
//! applies to a capsule; nothing may panic.
#![no_main]

use ferrox_nvme_spec::{
    validate_nqn, Command, ConnectCommand, ConnectData, DsmRange, GetFeatures, GetLogPage,
    Identify, PropertyCommand, SetFeatures,
};
use libfuzzer_sys::fuzz_target;
use zerocopy::FromBytes;

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let cmd = Command::read_from_bytes(&data[..64]).expect("64 bytes");
    let payload = &data[64..];
    for connected in [false, true] {
        let _ = ferrox_nvmeof::target::conn::Conn::plan(&cmd, payload.len(), connected);
    }
    let _ = Identify::parse(&cmd);
    let g = GetLogPage::parse(&cmd);
    let _ = g.num_bytes();
    let _ = GetFeatures::parse(&cmd);
    let _ = SetFeatures::parse(&cmd);
    let _ = ConnectCommand::from_command(&cmd).sq_flow_control_disabled();
    let _ = PropertyCommand::from_command(&cmd).size();
    let _ = (cmd.slba(), cmd.block_count(), cmd.fua(), cmd.dsm_range_count());
    if payload.len() >= 1024 {
        let cd = ConnectData::read_from_bytes(&payload[..1024]).expect("1024 bytes");
        if let Ok(n) = cd.subnqn_str() {
            let _ = validate_nqn(n);
        }
        if let Ok(n) = cd.hostnqn_str() {
            let _ = validate_nqn(n);
        }
    }
    for chunk in payload.chunks_exact(16).take(256) {
        let r = DsmRange::read_from_bytes(chunk).expect("16 bytes");
        let _ = r.slba.checked_add(u64::from(r.nlb));
    }
});
