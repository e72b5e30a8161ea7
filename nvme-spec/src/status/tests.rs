use super::*;

#[test]
fn constants_have_spec_values() {
    assert_eq!(
        (Status::INVALID_FIELD.sct(), Status::INVALID_FIELD.sc()),
        (StatusCodeType::GENERIC, 0x02)
    );
    assert_eq!(Status::LBA_OUT_OF_RANGE.sc(), 0x80);
    assert_eq!(Status::INVALID_LOG_PAGE.raw(), 0x109);
    assert_eq!(Status::CONNECT_INVALID_HOST.raw(), 0x184);
    assert_eq!(Status::DEALLOCATED_OR_UNWRITTEN.raw(), 0x287);
    assert_eq!(Status::ANA_INACCESSIBLE.raw(), 0x302);
    // Linux host: NVME_SC_AUTH_REQUIRED = 0x191.
    assert_eq!(Status::AUTH_REQUIRED.raw(), 0x191);
}

#[test]
fn cqe_status_round_trips() {
    for raw in [0u16, 0x0002, 0x0109, 0x0287, 0x4182, 0x7FFF] {
        let status = Status::from_raw(raw);
        for phase in [false, true] {
            let field = status.to_cqe_status(phase);
            assert_eq!(field & 1, u16::from(phase));
            assert_eq!(Status::from_cqe_status(field), status);
        }
    }
}

#[test]
fn cqe_status_bit_layout() {
    let status = Status::INVALID_FIELD.with_dnr().with_more(true).with_crd(2);
    let field = status.to_cqe_status(true);
    assert_eq!(field & 1, 1, "phase");
    assert_eq!((field >> 1) & 0xFF, 0x02, "SC");
    assert_eq!((field >> 9) & 0x7, 0, "SCT");
    assert_eq!((field >> 12) & 0x3, 2, "CRD");
    assert_eq!((field >> 14) & 1, 1, "More");
    assert_eq!(field >> 15, 1, "DNR");
    let media = Status::COMPARE_FAILURE.to_cqe_status(false);
    assert_eq!((media >> 9) & 0x7, 2);
    assert_eq!((media >> 1) & 0xFF, 0x85);
}

#[test]
fn flags_do_not_change_the_code() {
    let status = Status::LBA_OUT_OF_RANGE.with_dnr().with_crd(1);
    assert!(status.dnr());
    assert_eq!(status.crd(), 1);
    assert_ne!(status, Status::LBA_OUT_OF_RANGE);
    assert_eq!(status.code(), Status::LBA_OUT_OF_RANGE);
    assert!(!status.set_dnr(false).dnr());
    assert!(Status::SUCCESS.is_success());
    assert!(status.is_error());
}

#[test]
fn display_names_the_status() {
    let text = format!("{}", Status::INVALID_OPCODE.with_dnr());
    assert_eq!(text, "Invalid Command Opcode (sct 0x0, sc 0x01, dnr)");
    let unknown = format!("{}", Status::new(StatusCodeType::VENDOR_SPECIFIC, 0xC0));
    assert!(unknown.starts_with("Unknown Status"), "{unknown}");
    assert_eq!(format!("{:?}", StatusCodeType(5)), "StatusCodeType(0x5)");
}
