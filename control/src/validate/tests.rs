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

fn why(e: ControlError) -> String {
    e.to_string()
}

#[test]
fn label_keys() {
    for ok in [
        "zone",
        "Rack_1",
        "a",
        "a.b-c_d",
        "topology.kubernetes.io/zone",
        "x-1.example/z",
    ] {
        assert!(label_key("spread", ok).is_ok(), "{ok}");
    }
    assert!(label_key("spread", &"k".repeat(MAX_LABEL)).is_ok());
    let long_prefix = format!("{}/z", vec!["a".repeat(63); 4].join("."));
    assert!(long_prefix.len() > MAX_LABEL_PREFIX + 2);
    for (bad, says) in [
        ("", "invalid argument spread: key \"\" is empty"),
        (
            "-zone",
            "key \"-zone\" must begin and end with a letter or digit",
        ),
        ("zone.", "must begin and end with a letter or digit"),
        ("zo ne", "contains ' '"),
        ("zöne", "contains 'ö'"),
        ("a/b/c", "key \"a/b/c\": name \"b/c\" contains '/'"),
        ("/zone", "prefix \"\" is empty"),
        (
            "Example.com/zone",
            "prefix \"Example.com\" is not a DNS name",
        ),
        ("a..b/zone", "is not a DNS name: \"\" must be"),
        ("-a.b/zone", "\"-a\" must be 1 to 63"),
        ("example.com/", "name \"\" is empty"),
        (&long_prefix, "more than 253"),
    ] {
        let e = why(label_key("spread", bad).unwrap_err());
        assert!(e.starts_with("invalid argument spread: "), "{e}");
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    let e = why(label_key("labels", &"k".repeat(MAX_LABEL + 1)).unwrap_err());
    assert!(e.contains("64 characters long, more than 63"), "{e}");
}

#[test]
fn label_values() {
    assert!(label_value("labels", "zone", "z1").is_ok());
    assert!(label_value("labels", "zone", "eu-west-1a.x_y").is_ok());
    let e = why(label_value("labels", "zone", "").unwrap_err());
    assert_eq!(
        e,
        "invalid argument labels: value \"\" of \"zone\" is empty"
    );
    let e = why(label_value("labels", "zone", "z1/").unwrap_err());
    assert!(e.contains("value \"z1/\" of \"zone\" contains '/'"), "{e}");
    assert!(label_value("labels", "zone", &"v".repeat(64)).is_err());
}

#[test]
fn labels_flag() {
    let l = parse_labels("labels", "zone=z1,rack=r1").unwrap();
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        [("rack".into(), "r1".into()), ("zone".into(), "z1".into())]
    );
    assert!(parse_labels("labels", "").unwrap().is_empty());
    for (bad, says) in [
        ("zone", "\"zone\" has no '='; write key=value"),
        ("zone=z1,", "has an empty label"),
        (",zone=z1", "has an empty label"),
        ("zone=z1,zone=z2", "key \"zone\" is given twice"),
        ("zone=", "value \"\" of \"zone\" is empty"),
        ("=z1", "key \"\" is empty"),
        ("zone=z1=x", "value \"z1=x\" of \"zone\" contains '='"),
        ("zone=z1, rack=r1", "key \" rack\" contains ' '"),
        ("node=a", "key \"node\" is reserved"),
    ] {
        let e = why(parse_labels("labels", bad).unwrap_err());
        assert!(e.starts_with("invalid argument labels: "), "{e}");
        assert!(e.contains(says), "{bad:?}: {e}");
    }
    // Only the bare key is reserved.
    assert!(parse_labels("labels", "example.com/node=a").is_ok());
}

#[test]
fn replica_counts() {
    for n in 1..=5 {
        assert!(replicas("replicas", n).is_ok());
    }
    for n in [0, 6, 100] {
        let e = replicas("replicas", n).unwrap_err();
        assert_eq!(e.kind(), crate::Kind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            format!("invalid argument replicas: must be 1 to 5, not {n}")
        );
    }
}

#[test]
fn spreads() {
    assert_eq!(spread("spread", "").unwrap(), "node");
    assert_eq!(spread("spread", "node").unwrap(), "node");
    assert_eq!(spread("spread", "zone").unwrap(), "zone");
    assert_eq!(
        spread("spread", "topology.kubernetes.io/zone").unwrap(),
        "topology.kubernetes.io/zone"
    );
    let e = spread("spread", "zone!").unwrap_err();
    assert_eq!(e.kind(), crate::Kind::InvalidArgument);
    assert!(
        e.to_string().starts_with("invalid argument spread: "),
        "{e}"
    );
}

#[test]
fn daemon_labels_flag() {
    let l = labels("zone=z1, rack=r-1.a").unwrap();
    assert_eq!(l.get("zone").map(String::as_str), Some("z1"));
    assert_eq!(l.get("rack").map(String::as_str), Some("r-1.a"));
    assert!(labels("").unwrap().is_empty());
    for bad in [
        "zone",
        "zone=",
        "=z1",
        "zo ne=z1",
        "zone=z1,zone=z2",
        "node=a",
        "zone=-z1",
    ] {
        let e = labels(bad).unwrap_err();
        assert!(e.contains("labels"), "{bad}: {e}");
    }
}
