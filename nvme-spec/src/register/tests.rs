use super::*;
use crate::Aqa;

#[test]
fn offsets_match_the_specification() {
    assert_eq!(
        [CAP, VS, INTMS, INTMC, CC, CSTS, NSSR, AQA, ASQ, ACQ, DOORBELLS],
        [0x00, 0x08, 0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24, 0x28, 0x30, 0x1000]
    );
}

#[test]
fn doorbells_round_trip() {
    assert_eq!(doorbell(0, false, 0), 0x1000);
    assert_eq!(doorbell(0, true, 0), 0x1004);
    assert_eq!(doorbell(3, false, 0), 0x1018);
    assert_eq!(doorbell(1, true, 2), 0x1000 + 3 * 16);
    for dstrd in [0, 1, 4] {
        for qid in [0, 1, 7, 1023, u16::MAX] {
            for completion in [false, true] {
                let off = doorbell(qid, completion, dstrd);
                assert_eq!(doorbell_at(off, dstrd), Some((qid, completion)));
            }
        }
    }
    assert_eq!(doorbell_at(ACQ, 0), None);
    assert_eq!(doorbell_at(0x1002, 0), None);
    assert_eq!(doorbell_at(0x1004, 1), None);
    assert_eq!(doorbell_at(doorbell(u16::MAX, true, 0) + 4, 0), None);
}

#[test]
fn aqa_fields() {
    let mut aqa = Aqa::default();
    aqa.set_asqs(31);
    aqa.set_acqs(31);
    assert_eq!(aqa.0, (31 << 16) | 31);
    assert_eq!(Aqa(0x0FFF_0FFF).asqs(), 0xFFF);
    assert_eq!(Aqa(0xFFFF_FFFF).acqs(), 0xFFF);
}
