// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! `--spawn-target`: an in-process Ferrox target on loopback, benchmarked over
//! nvme+tcp through the host library, with --verify.

use std::process::Command;

#[test]
fn spawn_target_randrw_verify_over_nvme_tcp() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrox-perf"))
        .args([
            "--spawn-target",
            "--spawn-size",
            "16MiB",
            "--rw",
            "randrw",
            "--verify",
            "--ios",
            "4000",
            "--qd",
            "8",
            "--poll-mode",
            "adaptive",
            "--json",
        ])
        .output()
        .expect("run ferrox-perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(stdout.contains("nvme+tcp://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("\"passed\": true"), "{stdout}");
    assert!(stdout.contains("\"errors\": 0"), "{stdout}");
    assert!(stdout.contains("\"ios\": 4000"), "{stdout}");
}
