use zerocopy::IntoBytes;

use super::*;

#[test]
fn get_log_page_fields() {
    let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, 1).with_nsid(0xFFFF_FFFF);
    // LID 0x70, LSP 0x05, RAE, NUMDL 0x00FF; NUMDU 0x0001, LSI 0x0042; LPO 0x1_0000_0400.
    cmd.cdw10 = 0x00FF_8570;
    cmd.cdw11 = 0x0042_0001;
    cmd.cdw12 = 0x400;
    cmd.cdw13 = 1;
    cmd.cdw14 = 0x0200_0000 | 1 << 23 | 3;
    let glp = GetLogPage::parse(&cmd);
    assert_eq!(glp.lid, Lid::DISCOVERY);
    assert_eq!(glp.lsp, 0x05);
    assert!(glp.rae);
    assert_eq!(glp.numd, 0x0001_00FF);
    assert_eq!(glp.num_bytes(), 0x0001_0100 * 4);
    assert_eq!(glp.lsi, 0x42);
    assert_eq!(glp.lpo, 0x1_0000_0400);
    assert!(glp.ot);
    assert_eq!(glp.uuid_index, 3);
    assert_eq!(glp.csi, Csi::ZONED);
    assert_eq!(glp.to_command(1), cmd);

    let smart = GetLogPage::new(Lid::SMART, 0xFFFF_FFFF, 512, 0);
    assert_eq!(smart.numd, 127);
    assert_eq!(GetLogPage::parse(&smart.to_command(9)), smart);
}

#[test]
fn smart_log_counters() {
    let mut smart = SmartLog::zeroed();
    smart.critical_warning = CriticalWarning::READ_ONLY.bits();
    smart.set_composite_temperature(310);
    smart.set_data_units_read(u128::from(u64::MAX) + 5);
    smart.set_power_on_hours(12);
    smart.temperature_sensors[0] = 300;
    assert_eq!(smart.data_units_read(), u128::from(u64::MAX) + 5);
    let bytes = smart.as_bytes();
    assert_eq!(bytes[0], 0x08);
    assert_eq!(&bytes[1..3], &310u16.to_le_bytes());
    assert_eq!(&bytes[32..48], &(u128::from(u64::MAX) + 5).to_le_bytes());
    assert_eq!(bytes[128], 12);
    assert_eq!(&bytes[200..202], &300u16.to_le_bytes());
}

#[test]
fn command_effects() {
    let mut log = CommandsSupportedEffects::zeroed();
    log.acs[usize::from(AdminOpcode::IDENTIFY.0)] = CommandEffects::CSUPP.bits();
    log.iocs[usize::from(crate::IoOpcode::WRITE.0)] =
        (CommandEffects::CSUPP | CommandEffects::LBCC).bits();
    let bytes = log.as_bytes();
    assert_eq!(&bytes[6 * 4..7 * 4], &[1, 0, 0, 0]);
    assert_eq!(&bytes[1024 + 4..1024 + 8], &[3, 0, 0, 0]);
}

#[test]
fn error_entry_and_ana() {
    let entry = ErrorInformationEntry {
        error_count: 1,
        sqid: 2,
        cid: 3,
        nsid: 4,
        ..Default::default()
    };
    let bytes = entry.as_bytes();
    assert_eq!(&bytes[8..12], &[2, 0, 3, 0]);
    assert_eq!(&bytes[24..28], &[4, 0, 0, 0]);
    let desc = AnaGroupDescriptor {
        grpid: 1,
        nnsids: 2,
        chgcnt: 3,
        state: AnaState::OPTIMIZED.0,
        ..Default::default()
    };
    assert_eq!(desc.as_bytes()[16], 1);
}
