//! Feeds a byte stream to the PDU decoder the way a connection does: common header,
//! checks, type-specific header, then skips PLEN. Invariants of accepted layouts are
//! asserted; nothing may panic.
#![no_main]

use ferrox_nvmeof::pdu::{
    validate_h2c, CommonHeader, DataHeader, Digests, IcReq, Limits, PduType, CH_LEN, DIGEST_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        in_capsule: 8192,
        max_h2c_data: 131072,
    };
    let mut digests: Option<Digests> = None;
    if mode & 4 != 0 {
        digests = Some(Digests {
            header: mode & 1 != 0,
            data: mode & 2 != 0,
        });
    }
    while rest.len() >= CH_LEN {
        let ch = CommonHeader::parse(&rest[..CH_LEN]);
        let Ok(l) = validate_h2c(&ch, digests, &limits) else {
            return; // a termination request; the connection ends
        };
        assert!(l.header_bytes() <= ch.plen as usize);
        if l.data_len > 0 {
            let tail = if l.ddgst { DIGEST_LEN } else { 0 };
            assert_eq!(l.pdo + l.data_len + tail, ch.plen as usize);
            assert!(l.pdo >= l.header_bytes());
        }
        if rest.len() < l.header_bytes() {
            return;
        }
        let h = &rest[..l.header_bytes()];
        match ch.pdu_type {
            PduType::IC_REQ => {
                let r = IcReq::parse(h);
                if r.check(h[11]).is_ok() {
                    digests = Some(r.digests);
                } else {
                    return;
                }
            }
            PduType::H2C_DATA => {
                let _ = DataHeader::parse(h);
            }
            PduType::CAPSULE_CMD => {
                let cmd = <ferrox_nvme_spec::Command as zerocopy::FromBytes>::read_from_bytes(&h[8..72])
                    .expect("64 bytes");
                let _ = ferrox_nvmeof::target::conn::Conn::plan(&cmd, l.data_len, digests.is_some());
            }
            _ => {}
        }
        let skip = (ch.plen as usize).min(rest.len());
        rest = &rest[skip..];
    }
});
