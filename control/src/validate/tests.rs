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
