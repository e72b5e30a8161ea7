use super::*;

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;

#[test]
fn the_rule_as_a_table() {
    use Base::*;
    let cases: &[(&str, u64, Base)] = &[
        ("0", 0, Bytes),
        ("4096", 4096, Bytes),
        ("4096B", 4096, Bytes),
        ("4096 b", 4096, Bytes),
        ("  512  ", 512, Bytes),
        ("4k", 4 * KI, Binary),
        ("4K", 4 * KI, Binary),
        ("4Ki", 4 * KI, Binary),
        ("4KiB", 4 * KI, Binary),
        ("4kib", 4 * KI, Binary),
        ("1m", MI, Binary),
        ("512 MiB", 512 * MI, Binary),
        ("10G", 10 * GI, Binary),
        ("10g", 10 * GI, Binary),
        ("10Gi", 10 * GI, Binary),
        ("10GiB", 10 * GI, Binary),
        ("2t", 2 * TI, Binary),
        ("2TiB", 2 * TI, Binary),
        ("1.5GiB", 3 << 29, Binary),
        ("1.5G", 3 << 29, Binary),
        (".5k", 512, Binary),
        ("2.k", 2 * KI, Binary),
        ("1.50000MiB", 3 << 19, Binary),
        ("00010GiB", 10 * GI, Binary),
        ("1kB", 1_000, Decimal),
        ("1KB", 1_000, Decimal),
        ("1kb", 1_000, Decimal),
        ("1MB", 1_000_000, Decimal),
        ("10GB", 10_000_000_000, Decimal),
        ("10gb", 10_000_000_000, Decimal),
        ("2TB", 2_000_000_000_000, Decimal),
        ("1.5GB", 1_500_000_000, Decimal),
        ("0.001kB", 1, Decimal),
        ("16777215TiB", 16_777_215 * TI, Binary),
        ("18446744073709551615", u64::MAX, Bytes),
    ];
    for &(text, bytes, base) in cases {
        assert_eq!(parse_spelled(text), Ok(Size { bytes, base }), "{text:?}");
        assert_eq!(parse(text), Ok(bytes), "{text:?}");
    }
}

#[test]
fn refusals_name_the_text_and_why() {
    let no_number = |t: &str| SizeError::NoNumber { text: t.into() };
    let cases: &[(&str, SizeError)] = &[
        ("", no_number("")),
        ("GiB", no_number("GiB")),
        (".", no_number(".")),
        ("-1", no_number("-1")),
        ("+1", no_number("+1")),
        ("1.2.3k", no_number("1.2.3k")),
        (
            "12 parsecs",
            SizeError::UnknownUnit {
                text: "12 parsecs".into(),
                unit: "parsecs".into(),
            },
        ),
        (
            "4x",
            SizeError::UnknownUnit {
                text: "4x".into(),
                unit: "x".into(),
            },
        ),
        (
            "1PiB",
            SizeError::UnknownUnit {
                text: "1PiB".into(),
                unit: "PiB".into(),
            },
        ),
        (
            "1e9",
            SizeError::UnknownUnit {
                text: "1e9".into(),
                unit: "e9".into(),
            },
        ),
        (
            "1kibb",
            SizeError::UnknownUnit {
                text: "1kibb".into(),
                unit: "kibb".into(),
            },
        ),
        ("1.5", SizeError::NotWhole { text: "1.5".into() }),
        (
            "1.1k",
            SizeError::NotWhole {
                text: "1.1k".into(),
            },
        ),
        (
            "0.0001kB",
            SizeError::NotWhole {
                text: "0.0001kB".into(),
            },
        ),
        (
            "18446744073709551616",
            SizeError::TooLarge {
                text: "18446744073709551616".into(),
            },
        ),
        (
            "16777216TiB",
            SizeError::TooLarge {
                text: "16777216TiB".into(),
            },
        ),
        (
            "20000000t",
            SizeError::TooLarge {
                text: "20000000t".into(),
            },
        ),
        (
            "999999999999999999999999",
            SizeError::TooLarge {
                text: "999999999999999999999999".into(),
            },
        ),
        (
            "0.000000000000000000001TiB",
            SizeError::TooPrecise {
                text: "0.000000000000000000001TiB".into(),
            },
        ),
    ];
    for (text, want) in cases {
        let got = parse(text);
        assert_eq!(got.as_ref(), Err(want), "{text:?}");
        let msg = got.unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{text:?}")), "{msg}");
    }
}

#[test]
fn an_unknown_unit_names_the_rule() {
    let msg = parse("12 parsecs").unwrap_err().to_string();
    assert!(msg.contains("GiB") && msg.contains("GB"), "{msg}");
}

#[test]
fn legacy_binary_tools_refuse_decimal_units_with_both_readings() {
    let e = parse_legacy_binary("10GB", "ferroxctl").unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"10GB\": GB is decimal (10,000,000,000 bytes) but ferroxctl read it as 10 GiB \
         before; write 10GiB or 10G for binary, or 10000000000"
    );
    let e = parse_legacy_binary("1.5mb", "ferrox-perf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"1.5mb\": mb is decimal (1,500,000 bytes) but ferrox-perf read it as 1.5 MiB \
         before; write 1.5MiB or 1.5M for binary, or 1500000"
    );
    for (text, binary) in [("4kB", "4KiB"), ("4 KB", "4KiB"), ("2tb", "2TiB")] {
        let msg = parse_legacy_binary(text, "x").unwrap_err().to_string();
        assert!(msg.contains(&format!("write {binary}")), "{msg}");
    }
    // Every spelling whose reading did not change is accepted as before.
    for (text, bytes) in [
        ("10GiB", 10 * GI),
        ("10g", 10 * GI),
        ("10Gi", 10 * GI),
        ("4096", 4096),
        ("512B", 512),
    ] {
        assert_eq!(parse_legacy_binary(text, "x"), Ok(bytes), "{text:?}");
    }
    // Other errors are the plain parser's.
    assert_eq!(
        parse_legacy_binary("1.1k", "x"),
        Err(SizeError::NotWhole {
            text: "1.1k".into()
        })
    );
}

#[test]
fn human_prints_binary_units() {
    assert_eq!(human(10 * GI), "10 GiB");
    assert_eq!(human(3 << 29), "1.5 GiB");
    assert_eq!(human(100), "100 B");
    assert_eq!(human(1023), "1023 B");
    assert_eq!(human(KI), "1 KiB");
    assert_eq!(human(5 * TI), "5 TiB");
    assert_eq!(human(4096 * TI), "4096 TiB");
}

#[test]
fn grouped_thousands() {
    assert_eq!(grouped(0), "0");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(1000), "1,000");
    assert_eq!(grouped(10_000_000_000), "10,000,000,000");
    assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
}
