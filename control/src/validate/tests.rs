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
    assert_eq!(parse_size("10GiB"), Ok(10 << 30));
    assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("1.5G"), Ok(3 << 29));
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("GiB").is_err());
    assert!(size("size_bytes", 0, 4096).is_err());
    assert!(size("size_bytes", 4097, 4096).is_err());
    assert!(size("size_bytes", 8192, 4096).is_ok());
    assert_eq!(human(10 << 30), "10 GiB");
    assert_eq!(human(3 << 29), "1.5 GiB");
    assert_eq!(human(100), "100 B");
}

#[test]
fn nqns() {
    assert!(nqn("nqn", "nqn.2026-11.io.ferrox:volume:a").is_ok());
    let e = nqn("nqn", "not-an-nqn").unwrap_err();
    assert!(e.to_string().contains("not-an-nqn"), "{e}");
}
