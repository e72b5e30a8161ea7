use super::*;

#[test]
fn names() {
    assert!(name("name", "vol-1.a_b").is_ok());
    assert!(name("name", "").is_err());
    assert!(name("name", "-x").is_err());
    assert!(name("name", "a/b").is_err());
    assert!(name("name", "a b").is_err());
    assert!(name("name", &"x".repeat(MAX_NAME)).is_ok());
    let e = name("name", &"x".repeat(MAX_NAME + 1)).unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
}

#[test]
fn sizes() {
    assert!(size("size_bytes", 0, 4096).is_err());
    assert!(size("size_bytes", 4097, 4096).is_err());
    assert!(size("size_bytes", 8192, 4096).is_ok());
    let e = size("size_bytes", 6 << 10, 4096).unwrap_err().to_string();
    assert!(e.contains("6144 (6 KiB) is not a multiple of 4 KiB"), "{e}");
}

#[test]
fn nqns() {
    assert!(nqn("nqn", "nqn.2026-11.io.ferrox:volume:a").is_ok());
    let e = nqn("nqn", "not-an-nqn").unwrap_err();
    assert!(e.to_string().contains("not-an-nqn"), "{e}");
}

#[test]
fn labels_are_checked() {
    let l = labels("zone=z1, rack=r-1.a").unwrap();
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        [
            ("rack".to_string(), "r-1.a".to_string()),
            ("zone".to_string(), "z1".to_string())
        ]
    );
    assert!(labels("").unwrap().is_empty());
    for (bad, why) in [
        ("zone", "expected KEY=VALUE"),
        ("zone=", "zone: value \"\" must be 1 to 63"),
        ("=z1", "key \"\" must be 1 to 63"),
        ("Zone=z1", "must be lowercase"),
        ("zo ne=z1", "contains ' '"),
        ("zone=z1,zone=z2", "given twice"),
        ("node=a", "reserved"),
        ("zone=-z1", "start and end with a letter or digit"),
        ("zone=z/1", "contains '/'"),
    ] {
        let e = labels(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert!(labels(&format!("k={}", "v".repeat(64))).is_err());
}
