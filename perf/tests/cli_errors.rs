// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! Bad input gives one error line and exit status 2; `--help` explains.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrox-perf"))
        .args(args)
        .output()
        .expect("run ferrox-perf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["nvme+tcp://127.0.0.1/nqn.2026-11.io.ferrox:a"], "no port"),
        (
            &["ftp://127.0.0.1:21/nqn.2026-11.io.ferrox:a"],
            "unsupported scheme",
        ),
        (
            &["malloc:1MiB", "--bs", "1000"],
            "not a multiple of the device block size",
        ),
        (&["malloc:1MiB", "--qd", "0"], "--qd"),
        (&["malloc:1MiB", "--rw", "sideways"], "--rw"),
        (&["/definitely/not/here"], "no such file"),
        (&["malloc:1MiB", "--mix", "150"], "--mix"),
        (&["malloc:1MiB", "--dist", "zipf:0"], "--dist"),
        (
            &["malloc:1MiB", "--range", "2MiB"],
            "larger than the device",
        ),
        (&["malloc:1MiB", "--cores", "9999"], "--cores"),
        (
            &["malloc:1GB"],
            "\"1GB\": GB is decimal (1,000,000,000 bytes) but ferrox-perf read it as 1 GiB \
             before; write 1GiB or 1G for binary, or 1000000000",
        ),
        (
            &["malloc:1MiB", "--bs", "4kb"],
            "write 4KiB or 4K for binary",
        ),
        (&["malloc:1MiB", "--frobnicate"], "--frobnicate"),
        (&[], "TARGET"),
        (&["compare", "malloc:1MiB"], "<B>"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("ferrox-perf: "), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn help_explains_with_examples() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "nvme+tcp://",
        "malloc:SIZE",
        "--spawn-target",
        "--verify",
        "compare",
        "Examples:",
        "Decimal units (kB, MB, GB, TB: powers of",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}");
    }
    let (code, out, _) = run(&["compare", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--rounds"));
}

#[test]
fn small_malloc_run_prints_a_table_and_json() {
    let (code, out, err) = run(&[
        "malloc:4MiB",
        "--ios",
        "2000",
        "--qd",
        "4",
        "--poll-mode",
        "adaptive",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("IOPS") && out.contains("total"), "{out}");
    let (code, out, err) = run(&[
        "malloc:4MiB",
        "--ios",
        "2000",
        "--rw",
        "randrw",
        "--verify",
        "--json",
        "--poll-mode",
        "adaptive",
    ]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "\"version\": 1",
        "\"iops\"",
        "\"p99_9_us\"",
        "\"per_core\"",
        "\"cpu_seconds\"",
        "\"passed\": true",
    ] {
        assert!(out.contains(field), "JSON lacks {field}: {out}");
    }
}

#[test]
fn unreachable_nvmf_target_fails_with_exit_1() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let (code, _, err) = run(&[
        "nvme+tcp://127.0.0.1:1/nqn.2026-11.io.ferrox:a",
        "--ios",
        "1",
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nvme+tcp://127.0.0.1:1/"), "{err}");
}
