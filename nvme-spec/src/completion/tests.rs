use zerocopy::IntoBytes;

use super::*;

#[test]
fn status_and_phase() {
    let mut cqe = Completion::new(9, Status::INVALID_FIELD.with_dnr())
        .with_sq(1, 5)
        .with_dw0(0xAABB);
    assert!(!cqe.phase());
    cqe.set_phase(true);
    assert!(cqe.phase());
    assert_eq!(cqe.status(), Status::INVALID_FIELD.with_dnr());
    cqe.set_status(Status::SUCCESS);
    assert!(cqe.phase());
    assert!(cqe.status().is_success());
    let bytes = cqe.as_bytes();
    assert_eq!(&bytes[0..4], &0xAABBu32.to_le_bytes());
    assert_eq!(&bytes[8..10], &5u16.to_le_bytes());
    assert_eq!(&bytes[10..12], &1u16.to_le_bytes());
    assert_eq!(&bytes[12..14], &9u16.to_le_bytes());
    assert_eq!(&bytes[14..16], &1u16.to_le_bytes());
}

#[test]
fn qword() {
    let cqe = Completion::success(1).with_qword(0x1122_3344_5566_7788);
    assert_eq!(cqe.dw0, 0x5566_7788);
    assert_eq!(cqe.dw1, 0x1122_3344);
    assert_eq!(cqe.qword(), 0x1122_3344_5566_7788);
}
