use super::*;

fn fields(kind: &str) -> BdevFields {
    BdevFields {
        name: "d0".into(),
        kind: kind.into(),
        block_size: 512,
        queue_depth: 128,
        ..BdevFields::default()
    }
}

#[test]
fn each_kind_reads_its_keys() {
    let spec = BdevSpec::from_fields(BdevFields {
        size: Some(1 << 20),
        ..fields("malloc")
    })
    .unwrap();
    assert_eq!(
        spec.kind,
        BdevKind::Malloc {
            size: 1 << 20,
            block_size: 512
        }
    );
    let spec = BdevSpec::from_fields(BdevFields {
        path: Some("/tmp/x.img".into()),
        ..fields("uring")
    })
    .unwrap();
    assert_eq!(
        spec.kind,
        BdevKind::Uring {
            path: "/tmp/x.img".into(),
            size: None,
            block_size: 512,
            queue_depth: 128
        }
    );
    let spec = BdevSpec::from_fields(BdevFields {
        pci: Some("0000:00:04.0".into()),
        ..fields("nvme")
    })
    .unwrap();
    let BdevKind::Nvme(n) = &spec.kind else {
        panic!("{spec:?}")
    };
    assert_eq!(n.pci, "0000:00:04.0");
    assert_eq!(n.queue_entries(), Some(129));
}

#[test]
fn mistakes_name_the_key_and_value() {
    let cases: Vec<(BdevFields, &str)> = vec![
        (
            fields("floppy"),
            "bdev[0].kind: \"floppy\": expected \"malloc\", \"uring\" or \"nvme\"",
        ),
        (fields("malloc"), "bdev[0]: a malloc bdev needs a size"),
        (fields("uring"), "bdev[0]: a uring bdev needs a path"),
        (fields("nvme"), "bdev[0]: an nvme bdev needs pci"),
        (
            BdevFields {
                size: Some(4096),
                pci: Some("0000:00:04.0".into()),
                ..fields("malloc")
            },
            "bdev[0].pci: only an nvme bdev takes a PCI address (kind = \"malloc\")",
        ),
        (
            BdevFields {
                size: Some(4096),
                pci: Some("0000:00:04.0".into()),
                ..fields("nvme")
            },
            "bdev[0]: an nvme bdev takes its size from the controller",
        ),
        (
            BdevFields {
                pci: Some("0000:00:04.0".into()),
                queue_depth: 1,
                ..fields("nvme")
            },
            "bdev[0].queue_depth: 1: expected 2 to 1023",
        ),
        (
            BdevFields {
                pci: Some("0000:00:04.0".into()),
                queue_depth: 65535,
                ..fields("nvme")
            },
            "bdev[0].queue_depth: 65535",
        ),
        (
            BdevFields {
                size: Some(4097),
                ..fields("malloc")
            },
            "bdev[0].size: 4097 bytes: must be a non-zero multiple of block_size 512",
        ),
        (
            BdevFields {
                size: Some(0),
                ..fields("malloc")
            },
            "bdev[0].size: 0 bytes",
        ),
        (
            BdevFields {
                size: Some(1000),
                path: Some("/tmp/x.img".into()),
                ..fields("uring")
            },
            "bdev[0].size: 1000 bytes",
        ),
        (
            BdevFields {
                size: Some(4096),
                block_size: 1000,
                ..fields("malloc")
            },
            "bdev[0].block_size: 1000: expected a power of two",
        ),
        (
            BdevFields {
                name: String::new(),
                size: Some(4096),
                ..fields("malloc")
            },
            "bdev[0].name: must not be empty",
        ),
    ];
    for (f, want) in cases {
        let e = BdevSpec::from_fields(f.clone()).unwrap_err();
        let got = e.at("bdev[0]");
        assert!(
            got.starts_with(want),
            "{f:?}: {got:?} should start with {want:?}"
        );
    }
}

#[test]
fn create_makes_malloc_and_uring_devices() {
    let dev = BdevSpec {
        name: "m0".into(),
        kind: BdevKind::Malloc {
            size: 1 << 20,
            block_size: 4096,
        },
    }
    .create()
    .unwrap();
    assert_eq!(dev.info().name, "m0");
    assert_eq!(dev.info().block_size, 4096);
    assert_eq!(dev.info().num_blocks, 256);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u0.img");
    let dev = BdevSpec {
        name: "u0".into(),
        kind: BdevKind::Uring {
            path: path.clone(),
            size: Some(2 << 20),
            block_size: 512,
            queue_depth: 8,
        },
    }
    .create()
    .unwrap();
    assert_eq!(dev.info().num_blocks, 4096);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 20);
}

#[test]
fn create_checks_the_spec_first() {
    let e = BdevSpec {
        name: "m0".into(),
        kind: BdevKind::Malloc {
            size: 1000,
            block_size: 512,
        },
    }
    .create()
    .err()
    .unwrap();
    assert!(
        matches!(&e, RegistryError::Invalid { name, why } if name == "m0" && why.contains("size: 1000 bytes")),
        "{e}"
    );
}

#[test]
fn nvme_is_built_by_the_callers_hook() {
    let spec = BdevSpec {
        name: "nvme0".into(),
        kind: BdevKind::Nvme(NvmeSpec {
            pci: "0000:00:04.0".into(),
            queue_depth: 31,
        }),
    };
    assert!(spec.create().is_err(), "create alone cannot attach NVMe");
    let mut seen = None;
    let devs = spec
        .create_with(|name, n| {
            seen = Some((name.to_string(), n.clone()));
            let ns: Arc<dyn BlockDevice> = MallocBdev::new("nvme0n1", 8, 512)?;
            Ok::<_, RegistryError>(vec![ns])
        })
        .unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].info().name, "nvme0n1");
    let (name, n) = seen.unwrap();
    assert_eq!(name, "nvme0");
    assert_eq!(n.queue_entries(), Some(32));
}
