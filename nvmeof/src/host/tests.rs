use super::*;

#[test]
fn urls_parse() {
    let u =
        TargetUrl::parse("nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:default?nsid=2").unwrap();
    assert_eq!(u.addr, "127.0.0.1:4420");
    assert_eq!(u.nqn, "nqn.2026-11.io.ferrox:default");
    assert_eq!(u.nsid, 2);
    assert_eq!(
        TargetUrl::parse("nvme+tcp://[::1]:4420/nqn.2026-11.io.ferrox:x")
            .unwrap()
            .nsid,
        1
    );
    for bad in [
        "tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:x",
        "nvme+tcp://127.0.0.1/nqn.2026-11.io.ferrox:x",
        "nvme+tcp://127.0.0.1:4420",
        "nvme+tcp://127.0.0.1:4420/notannqn",
        "nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:x?nsid=0",
        "nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:x?foo=1",
    ] {
        assert!(TargetUrl::parse(bad).is_err(), "{bad}");
    }
}
