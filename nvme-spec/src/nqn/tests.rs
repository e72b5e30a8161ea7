use super::*;

#[test]
fn accepts_valid_nqns() {
    for nqn in [
        DISCOVERY_NQN,
        "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "nqn.2014-08.org.nvmexpress:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6",
        "nqn.2016-06.io.spdk:cnode1",
        "nqn.2014-08.com.example:nvme:nvm-subsystem-sn-d78432",
        "nqn.2024-12.io.ferrox:vol/é-ünïcode",
        "nqn.1988-11.com.dell",
        "nqn.2019-01.a:b",
    ] {
        assert_eq!(validate_nqn(nqn), Ok(()), "{nqn}");
    }
    let longest = format!("nqn.2024-01.io.ferrox:{}", "x".repeat(NQN_MAX_LEN - 22));
    assert_eq!(longest.len(), NQN_MAX_LEN);
    assert_eq!(validate_nqn(&longest), Ok(()));
}

#[test]
fn rejects_invalid_nqns() {
    let too_long = format!("nqn.2024-01.io.ferrox:{}", "x".repeat(NQN_MAX_LEN - 21));
    let cases: &[(&str, NqnError)] = &[
        ("", NqnError::Empty),
        (&too_long, NqnError::TooLong { len: 224, max: 223 }),
        ("iqn.2014-08.org.example:x", NqnError::MissingPrefix),
        ("nqn.14-08.org.example:x", NqnError::InvalidDate),
        ("nqn.2014-8.org.example:x", NqnError::InvalidDate),
        ("nqn.2014-08org.example:x", NqnError::InvalidDate),
        ("nqn.2014", NqnError::InvalidDate),
        ("nqn.2014-00.org.example:x", NqnError::InvalidMonth(0)),
        ("nqn.2014-13.org.example:x", NqnError::InvalidMonth(13)),
        ("nqn.2014-08.", NqnError::MissingDomain),
        ("nqn.2014-08.:x", NqnError::MissingDomain),
        ("nqn.2014-08.org..example:x", NqnError::InvalidDomain),
        ("nqn.2014-08.org.exa mple:x", NqnError::InvalidDomain),
        ("nqn.2014-08.org.example.:x", NqnError::InvalidDomain),
        ("nqn.2014-08.org.example:", NqnError::EmptyUserString),
        (
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf",
            NqnError::InvalidUuid,
        ),
        (
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae7dec-11d0-a765-00a0c91e6bf6a",
            NqnError::InvalidUuid,
        ),
        (
            "nqn.2014-08.org.nvmexpress:uuid:g81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            NqnError::InvalidUuid,
        ),
        ("nqn.2014-08.org.example:a\0b", NqnError::ContainsNul),
        (
            "nqn.2014-08.org.example:a\x1b[2Jb",
            NqnError::ControlCharacter { offset: 25 },
        ),
        (
            "nqn.2014-08.org.example:host\nforged log line",
            NqnError::ControlCharacter { offset: 28 },
        ),
        (
            "nqn.2014-08.org.example:\x07",
            NqnError::ControlCharacter { offset: 24 },
        ),
        (
            "nqn.2014-08.org.example:x\x7f",
            NqnError::ControlCharacter { offset: 25 },
        ),
        (
            "nqn.2014-08.org.example:x\u{9b}",
            NqnError::ControlCharacter { offset: 25 },
        ),
        (
            "nqn.2014-08.org.example:x\u{202e}gnp.exe",
            NqnError::ControlCharacter { offset: 25 },
        ),
        (
            "nqn.2014-08.org.example:x\u{2028}y",
            NqnError::ControlCharacter { offset: 25 },
        ),
        (
            "nqn.2014-08.org.example:x\u{200b}",
            NqnError::ControlCharacter { offset: 25 },
        ),
    ];
    for (nqn, err) in cases {
        assert_eq!(validate_nqn(nqn), Err(*err), "{nqn:?}");
    }
}

#[test]
fn discovery_nqn() {
    assert!(is_discovery_nqn(DISCOVERY_NQN));
    assert!(!is_discovery_nqn("nqn.2016-06.io.spdk:cnode1"));
}
