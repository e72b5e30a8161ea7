use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert_eq!(parse_size("4k").unwrap(), 4096);
    assert_eq!(parse_size("4K").unwrap(), 4096);
    assert_eq!(parse_size("4KiB").unwrap(), 4096);
    assert_eq!(parse_size("4 kib").unwrap(), 4096);
    assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
    assert_eq!(parse_size("128k").unwrap(), 128 << 10);
    assert_eq!(parse_size("1m").unwrap(), 1 << 20);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("2t").unwrap(), 2 << 40);
    assert_eq!(parse_size("512B").unwrap(), 512);
    for bad in [
        "",
        "k",
        "4x",
        "4kb",
        "1GB",
        "1.1k",
        "-1",
        "99999999999999999999",
        "20000000t",
    ] {
        assert!(
            matches!(parse_size(bad), Err(Error::Usage(_))),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn sizes_format_round_trip() {
    for b in [512, 4096, 128 << 10, 1 << 30, 3 << 40, 1000] {
        assert_eq!(parse_size(&format_size(b)).unwrap(), b);
    }
    assert_eq!(format_size(1 << 30), "1GiB");
}

#[test]
fn nvmf_urls() {
    let u = parse_nvmf_url("nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:vol1").unwrap();
    assert_eq!(u.addr, "127.0.0.1:4420".parse().unwrap());
    assert_eq!(u.nqn, "nqn.2026-11.io.ferrox:vol1");
    assert_eq!(u.nsid, None);
    let u = parse_nvmf_url("nvme+tcp://[::1]:4421/nqn.2026-11.io.ferrox:a?nsid=3").unwrap();
    assert_eq!(u.addr, "[::1]:4421".parse().unwrap());
    assert_eq!(u.nsid, Some(3));
    let u = parse_nvmf_url("nvme+tcp://localhost:4420/nqn.2026-11.io.ferrox:a").unwrap();
    assert_eq!(u.addr.port(), 4420);
    for bad in [
        "nvme://127.0.0.1:4420/nqn.2026-11.io.ferrox:a",
        "nvme+tcp://127.0.0.1/nqn.2026-11.io.ferrox:a",
        "nvme+tcp://127.0.0.1:4420",
        "nvme+tcp://127.0.0.1:4420/",
        "nvme+tcp://127.0.0.1:0/nqn.2026-11.io.ferrox:a",
        "nvme+tcp://127.0.0.1:99999/nqn.2026-11.io.ferrox:a",
        "nvme+tcp://:4420/nqn.2026-11.io.ferrox:a",
        "nvme+tcp://127.0.0.1:4420/vol1",
        "nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:a?nsid=0",
        "nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:a?nsid=x",
        "nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:a?foo=1",
        "nvme+tcp://[::1/nqn.2026-11.io.ferrox:a",
    ] {
        let e = parse_nvmf_url(bad).expect_err(bad);
        assert!(matches!(e, Error::Usage(_)), "{bad}");
        assert!(e.to_string().contains("nvme+tcp://ADDR:PORT/NQN"), "{e}");
    }
}

#[test]
fn targets() {
    assert_eq!(
        parse_target("malloc:1GiB").unwrap(),
        TargetSpec::Malloc { size: 1 << 30 }
    );
    assert!(parse_target("malloc:0").is_err());
    assert!(parse_target("malloc:lots").is_err());
    assert!(matches!(
        parse_target("nvme+tcp://127.0.0.1:4420/nqn.2026-11.io.ferrox:a").unwrap(),
        TargetSpec::Nvmf(_)
    ));
    assert_eq!(
        parse_target("/dev/null").unwrap(),
        TargetSpec::Path("/dev/null".into())
    );
    let e = parse_target("/no/such/file").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("no such file"), "{e}");
    assert!(parse_target("http://x:1/nqn.a").is_err());
    assert_eq!(
        parse_target("pcie://0000:00:04.0?nsid=2").unwrap(),
        TargetSpec::Pcie {
            bdf: "0000:00:04.0".into(),
            nsid: Some(2)
        }
    );
    assert_eq!(
        parse_target("pcie://00:04.0").unwrap().to_string(),
        "pcie://0000:00:04.0"
    );
    for bad in [
        "pcie://",
        "pcie://0000:00:04",
        "pcie://0000:00:04.0?nsid=0",
        "pcie://0000:00:04.0?queue=1",
    ] {
        let e = parse_target(bad).expect_err(bad);
        assert_eq!(e.exit_code(), 2, "{bad}");
        assert!(e.to_string().contains("pcie://DOMAIN:BUS:DEV.FN"), "{e}");
    }
}

#[test]
fn workloads() {
    assert_eq!(Rw::parse("randrw").unwrap(), Rw::RandRw);
    assert_eq!(Rw::parse("read").unwrap(), Rw::Read);
    assert!(Rw::parse("rw").is_err());
    assert!(Rw::parse("RandRead").is_err());
    assert_eq!(Rw::RandRw.read_percent(70), 70);
    assert_eq!(Rw::RandRead.read_percent(70), 100);
    assert_eq!(Rw::Write.read_percent(70), 0);
    assert!(Rw::RandWrite.is_random() && !Rw::Read.is_random());
}

#[test]
fn mixes() {
    assert_eq!(parse_mix("70").unwrap(), 70);
    assert_eq!(parse_mix("70%").unwrap(), 70);
    assert_eq!(parse_mix("0").unwrap(), 0);
    assert_eq!(parse_mix("100").unwrap(), 100);
    for bad in ["101", "-1", "x", "", "50.5"] {
        assert!(parse_mix(bad).is_err(), "{bad}");
    }
}

#[test]
fn dists_ranges_durations() {
    assert_eq!(parse_dist("uniform").unwrap(), Dist::Uniform);
    assert_eq!(parse_dist("zipf:1.2").unwrap(), Dist::Zipf { theta: 1.2 });
    for bad in ["zipf", "zipf:", "zipf:0", "zipf:-1", "zipf:nan", "pareto:1"] {
        assert!(parse_dist(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_range("50%").unwrap(), RangeSpec::Percent(50.0));
    assert_eq!(parse_range("1g").unwrap(), RangeSpec::Bytes(1 << 30));
    assert_eq!(RangeSpec::Percent(25.0).resolve(4 << 30), 1 << 30);
    for bad in ["0", "0%", "101%", "x%"] {
        assert!(parse_range(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_seconds("5").unwrap(), 5.0);
    assert_eq!(parse_seconds("0.5s").unwrap(), 0.5);
    assert_eq!(parse_seconds("2m").unwrap(), 120.0);
    assert!(parse_seconds("-1").is_err());
    assert!(parse_seconds("soon").is_err());
}
