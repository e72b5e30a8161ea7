// Integration tests are their own crates: there is no test module to put this in.
#![allow(clippy::tests_outside_test_module)]
//! `--spawn-target`: an in-process Ferrox target on loopback, benchmarked over
//! nvme+tcp through the host library, with --verify; with SQ flow control disabled
//! (the default: reads end with a C2HData SUCCESS) and kept (`--sq-flow-control`).

use std::process::Command;

#[test]
fn spawn_target_randrw_verify_over_nvme_tcp() {
    for extra in [&[][..], &["--sq-flow-control"][..]] {
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
            .args(extra)
            .output()
            .expect("run ferrox-perf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}\n{stdout}");
        assert!(stdout.contains("nvme+tcp://127.0.0.1:"), "{stdout}");
        assert!(stdout.contains("\"passed\": true"), "{extra:?}: {stdout}");
        assert!(stdout.contains("\"errors\": 0"), "{extra:?}: {stdout}");
        assert!(stdout.contains("\"ios\": 4000"), "{extra:?}: {stdout}");
    }
}
