use super::*;

#[test]
fn cap_round_trips() {
    let mut cap = Cap::default();
    cap.set_mqes(1023);
    cap.set_cqr(true);
    cap.set_ams(0b01);
    cap.set_to(30);
    cap.set_dstrd(0);
    cap.set_nssrs(false);
    cap.set_css(Cap::CSS_NVM | Cap::CSS_IO_COMMAND_SETS);
    cap.set_bps(false);
    cap.set_mpsmin(0);
    cap.set_mpsmax(4);
    cap.set_cmbs(true);
    cap.set_pmrs(true);
    cap.set_crms(0b11);
    assert_eq!(cap.mqes(), 1023);
    assert!(cap.cqr());
    assert_eq!(cap.ams(), 1);
    assert_eq!(cap.to(), 30);
    assert_eq!(cap.css(), 0x41);
    assert_eq!(cap.mpsmax(), 4);
    assert!(cap.cmbs() && cap.pmrs());
    assert_eq!(cap.crms(), 3);
    assert_eq!(cap.0 & 0xFFFF, 1023);
    assert_eq!((cap.0 >> 24) & 0xFF, 30);
    assert_eq!((cap.0 >> 37) & 0xFF, 0x41);
    assert_eq!((cap.0 >> 52) & 0xF, 4);
    assert_eq!((cap.0 >> 56) & 0x3, 0b11);
    cap.set_mqes(0);
    assert_eq!(cap.mqes(), 0);
    assert!(cap.cqr(), "neighbouring fields are untouched");
}

#[test]
fn cc_round_trips() {
    // What the Linux host writes: EN, IOSQES=6, IOCQES=4, MPS=0, CSS=NVM.
    let raw = 0x0046_0001;
    let mut cc = Cc(raw);
    assert!(cc.en());
    assert_eq!(cc.iosqes(), 6);
    assert_eq!(cc.iocqes(), 4);
    assert_eq!(cc.css(), Cc::CSS_NVM);
    assert_eq!(cc.shn(), Cc::SHN_NONE);
    cc.set_shn(Cc::SHN_NORMAL);
    assert_eq!(cc.0, raw | 1 << 14);
    cc.set_css(Cc::CSS_ALL_IO);
    cc.set_ams(7);
    cc.set_mps(15);
    cc.set_crime(true);
    assert_eq!(cc.css(), 6);
    assert_eq!(cc.ams(), 7);
    assert_eq!(cc.mps(), 15);
    assert!(cc.crime());
    cc.set_en(false);
    assert!(!cc.en());
    assert_eq!(cc.shn(), Cc::SHN_NORMAL);
}

#[test]
fn csts_and_vs() {
    let mut csts = Csts::default();
    csts.set_rdy(true);
    csts.set_shst(Csts::SHST_COMPLETE);
    assert_eq!(csts.0, 0b1001);
    csts.set_cfs(true);
    csts.set_nssro(true);
    csts.set_pp(true);
    csts.set_st(true);
    assert_eq!(csts.0, 0b111_1011);
    assert_eq!(csts.shst(), Csts::SHST_COMPLETE);

    assert_eq!(Vs::V2_0.0, 0x0002_0000);
    assert_eq!(Vs::V1_4.0, 0x0001_0400);
    let vs = Vs::new(1, 3, 2);
    assert_eq!((vs.mjr(), vs.mnr(), vs.ter()), (1, 3, 2));
    assert!(Vs::V2_0 > Vs::V1_4);
}

#[test]
fn offsets_and_sizes() {
    assert_eq!(PropertyOffset::CC.0, 0x14);
    assert_eq!(PropertyOffset::CSTS.0, 0x1C);
    assert_eq!(
        PropertyOffset::CAP.fabrics_size(),
        Some(PropertySize::Eight)
    );
    assert_eq!(PropertyOffset::VS.fabrics_size(), Some(PropertySize::Four));
    assert_eq!(PropertyOffset::INTMS.fabrics_size(), None);
    assert_eq!(format!("{:?}", PropertyOffset(0x14)), "CC");
}
