use super::*;

const LIMITS: Limits = Limits {
    in_capsule: 8192,
    max_h2c_data: 131072,
};
const ON: Option<Digests> = Some(Digests {
    header: false,
    data: false,
});

fn ch(t: PduType, flags: PduFlags, hlen: u8, pdo: u8, plen: u32) -> CommonHeader {
    CommonHeader {
        pdu_type: t,
        flags,
        hlen,
        pdo,
        plen,
    }
}

#[test]
fn icreq_round_trips_and_validates() {
    let req = IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests {
            header: true,
            data: false,
        },
        maxr2t: 0,
    };
    let b = req.encode();
    let c = CommonHeader::parse(&b);
    assert_eq!(validate_h2c(&c, None, &LIMITS).unwrap().hlen, 128);
    assert_eq!(IcReq::parse(&b), req);
    assert!(IcReq { pfv: 1, ..req }.check(1).is_err());
    assert_eq!(req.check(0x80).unwrap_err().fei, 11);
}

#[test]
fn sequence_errors() {
    let c = ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 0, 72);
    assert_eq!(
        validate_h2c(&c, None, &LIMITS).unwrap_err().fes,
        Fes::PDU_SEQUENCE_ERROR
    );
    let ic = ch(PduType::IC_REQ, PduFlags::empty(), 128, 0, 128);
    assert_eq!(
        validate_h2c(&ic, ON, &LIMITS).unwrap_err().fes,
        Fes::PDU_SEQUENCE_ERROR
    );
}

#[test]
fn controller_types_and_unknown_types_are_rejected() {
    for t in [
        PduType::IC_RESP,
        PduType::CAPSULE_RESP,
        PduType::C2H_DATA,
        PduType::R2T,
        PduType(0x42),
    ] {
        let e = validate_h2c(&ch(t, PduFlags::empty(), 24, 0, 24), ON, &LIMITS).unwrap_err();
        assert_eq!((e.fes, e.fei), (Fes::INVALID_HEADER_FIELD, 0), "{t:?}");
    }
}

#[test]
fn lengths_are_checked() {
    // wrong HLEN
    let e = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 24, 0, 72),
        ON,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fei, 2);
    // PLEN shorter than the header
    let e = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 0, 10),
        ON,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fei, 4);
    // PDO inside the header
    let e = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 8, 200),
        ON,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fei, 3);
    // in-capsule data beyond the limit
    let e = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 72, 72 + 8193),
        ON,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fes, Fes::DATA_OUT_OF_RANGE);
    assert_eq!(e.fei, 0, "FEI is reserved for this status");
    // H2CData beyond MAXH2CDATA
    let e = validate_h2c(
        &ch(PduType::H2C_DATA, PduFlags::empty(), 24, 24, 24 + 131073),
        ON,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fes, Fes::DATA_LIMIT_EXCEEDED);
    assert_eq!(e.fei, 0, "FEI is reserved for this status");
    // a good capsule with 4 KiB of data
    let l = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 72, 72 + 4096),
        ON,
        &LIMITS,
    )
    .unwrap();
    assert_eq!((l.pdo, l.data_len, l.pad()), (72, 4096, 0));
}

#[test]
fn digest_flags_must_match_negotiation() {
    let d = Some(Digests {
        header: true,
        data: true,
    });
    let e = validate_h2c(
        &ch(PduType::CAPSULE_CMD, PduFlags::empty(), 72, 0, 76),
        d,
        &LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.fei, 1);
    let l = validate_h2c(
        &ch(
            PduType::CAPSULE_CMD,
            PduFlags::HDGSTF | PduFlags::DDGSTF,
            72,
            76,
            76 + 512 + 4,
        ),
        d,
        &LIMITS,
    )
    .unwrap();
    assert_eq!((l.header_bytes(), l.data_len, l.ddgst), (76, 512, true));
}

#[test]
fn encoded_headers_validate_and_carry_digests() {
    let d = Digests {
        header: true,
        data: true,
    };
    let sqe = [7u8; 64];
    let h = HeaderBuf::capsule_cmd(&sqe, 512, d);
    let c = CommonHeader::parse(h.as_slice());
    let l = validate_h2c(&c, Some(d), &LIMITS).unwrap();
    assert_eq!(c.plen as usize, 72 + 4 + 512 + 4);
    assert_eq!(l.pdo, 76);
    let crc = le32(h.as_slice(), 72);
    assert_eq!(crc, crc32c(&h.as_slice()[..72]));
    assert_eq!(&h.as_slice()[8..72], &sqe[..]);
}

#[test]
fn c2h_data_honours_host_alignment() {
    let dh = DataHeader {
        cccid: 5,
        ttag: 9,
        offset: 0,
        length: 4096,
    };
    let h = HeaderBuf::c2h_data(dh, PduFlags::LAST_PDU, Digests::default(), 32);
    let c = CommonHeader::parse(h.as_slice());
    assert_eq!(c.pdo, 32);
    assert_eq!(h.len, 32);
    assert_eq!(c.plen, 32 + 4096);
    assert_eq!(
        DataHeader::parse(h.as_slice()).ttag,
        0,
        "C2HData has no TTAG"
    );
}

#[test]
fn term_req_quotes_the_bad_header() {
    let e = TermError::field(2, "x");
    let h = HeaderBuf::term_req(PduType::C2H_TERM_REQ, &e, &[0xaa; 200]);
    assert_eq!(h.len, 24 + 128);
    let c = CommonHeader::parse(h.as_slice());
    assert_eq!(c.plen, 152);
    assert_eq!(le16(h.as_slice(), 8), 1);
    assert_eq!(le32(h.as_slice(), 10), 2);
}
