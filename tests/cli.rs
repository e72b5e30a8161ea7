//! The daemon's command line: clear errors with exit code 2, the embedded default,
//! and a clean stop on SIGTERM.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn ferrox(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args(args)
        .output()
        .expect("run ferrox");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(text: &str) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ferrox.toml");
    std::fs::write(&p, text).unwrap();
    (d, p.display().to_string())
}

fn expect_config_error(text: &str, needles: &[&str]) {
    let (d, p) = config(text);
    let data = d.path().join("data").display().to_string();
    let (code, err) = ferrox(&["--config", &p, "--data-dir", &data]);
    assert_eq!(code, 2, "exit code for {text:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}: {err}");
    }
}

#[test]
fn unknown_key_is_named() {
    expect_config_error("[reactor]\ncoers = [0]\n", &["coers"]);
}

#[test]
fn bad_size_is_named_with_its_value() {
    expect_config_error(
        "[[bdev]]\nname = \"m\"\nkind = \"malloc\"\nsize = \"12 parsecs\"\n",
        &["bdev[0]", "size", "12 parsecs"],
    );
}

#[test]
fn sizes_follow_the_one_rule() {
    // "MB" is decimal (as the daemon always read it): 1,000,000 bytes, which 512-byte
    // blocks do not divide.
    expect_config_error(
        "[[bdev]]\nname = \"m\"\nkind = \"malloc\"\nsize = \"1MB\"\n",
        &[
            "bdev[0]",
            "size",
            "1000000 bytes",
            "multiple of block_size 512",
        ],
    );
    let d = tempfile::tempdir().unwrap();
    let data = d.path().display().to_string();
    let (code, err) = ferrox(&["--default-size", "1.5", "--data-dir", &data]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--default-size") && err.contains("\"1.5\" is not a whole number of bytes"),
        "{err}"
    );
    let (code, err) = ferrox(&["--default-size", "1 PiB", "--data-dir", &data]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown unit \"PiB\""), "{err}");
}

#[test]
fn unknown_bdev_kind_and_missing_bdev() {
    expect_config_error(
        "[[bdev]]\nname = \"m\"\nkind = \"floppy\"\nsize = 4096\n",
        &["floppy"],
    );
    expect_config_error(
        "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrox:x\"\nallow_any_host = true\n[[subsystem.namespace]]\nbdev = \"nope\"\n",
        &["nope"],
    );
}

#[test]
fn a_bad_node_name_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().display().to_string();
    let (code, err) = ferrox(&["--node-name", "rack_1", "--data-dir", &data]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--node-name") && err.contains("'_'"), "{err}");
}

#[test]
fn a_zero_connection_cap_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().display().to_string();
    for flag in ["--max-connections", "--max-connections-per-host"] {
        let (code, err) = ferrox(&[flag, "0", "--data-dir", &data, "--no-control"]);
        assert_eq!(code, 2, "{flag} 0: {err}");
        assert!(err.contains("at least 1"), "{flag} 0: {err}");
    }
}

#[test]
fn out_of_range_host_limits_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().display().to_string();
    for (flag, v, says) in [
        ("--max-discovery-per-host", "0", "at least 1"),
        ("--discovery-kato", "0", "at least 1"),
        ("--r2t-timeout", "0", "at least 1"),
        ("--stall-min-bytes", "0", "at least 1"),
        ("--r2t-share", "0", "1 to 100"),
        ("--r2t-share-total", "101", "1 to 100"),
    ] {
        let (code, err) = ferrox(&[flag, v, "--data-dir", &data, "--no-control"]);
        assert_eq!(code, 2, "{flag} {v}: {err}");
        assert!(err.contains(says), "{flag} {v}: {err}");
    }
}

#[test]
fn invalid_nqn_is_refused() {
    expect_config_error(
        "[[subsystem]]\nnqn = \"not-an-nqn\"\nallow_any_host = true\n",
        &["not-an-nqn"],
    );
}

fn nvme_bdev(pci: &str) -> String {
    format!("[[bdev]]\nname = \"nvme0\"\nkind = \"nvme\"\n{pci}\n")
}

#[test]
fn nvme_bdev_mistakes_exit_2_with_the_fix() {
    expect_config_error(&nvme_bdev(""), &["bdev[0]", "needs pci", "lspci"]);
    expect_config_error(
        &nvme_bdev("pci = \"04.0\""),
        &["bdev[0]", "\"04.0\"", "not a PCI address"],
    );
    expect_config_error(
        "[[bdev]]\nname = \"m\"\nkind = \"malloc\"\nsize = 4096\npci = \"0000:00:04.0\"\n",
        &["only an nvme bdev takes a PCI address"],
    );
    if !std::path::Path::new("/sys/bus/pci/devices/0000:fe:1f.7").exists() {
        expect_config_error(
            &nvme_bdev("pci = \"0000:fe:1f.7\""),
            &["0000:fe:1f.7", "no such PCI device", "hint: "],
        );
    }
    // Any function of this machine that is not on vfio-pci: refused before anything is
    // touched, with the command that binds it.
    let not_vfio = std::fs::read_dir("/sys/bus/pci/devices")
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path().join("driver")).map_or(true, |d| !d.ends_with("vfio-pci"))
        });
    if let Some(e) = not_vfio {
        let bdf = e.file_name().to_string_lossy().into_owned();
        expect_config_error(
            &nvme_bdev(&format!("pci = \"{bdf}\"")),
            &[
                "not bound to vfio-pci",
                "hint: ",
                &format!("vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override"),
            ],
        );
    }
}

#[test]
fn missing_config_file() {
    let (code, err) = ferrox(&["--config", "/nonexistent/ferrox.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/ferrox.toml"), "{err}");
}

#[test]
fn a_core_that_does_not_exist() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().display().to_string();
    let (code, err) = ferrox(&[
        "--cores",
        "4095",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("core 4095"), "{err}");
}

#[test]
fn bad_poll_mode() {
    let (code, err) = ferrox(&[
        "--poll-mode",
        "lazy",
        "--data-dir",
        "/tmp/ferrox-cli-test-unused",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("lazy"), "{err}");
}

#[test]
fn embedded_default_serves_and_stops_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--default-size",
            "16MiB",
            "--log",
            "warn",
        ])
        .arg("--data-dir")
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut connect = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("nvme connect -t tcp -a 127.0.0.1 -s") {
            connect = Some(line.clone());
        }
        if line.contains("ready") {
            break;
        }
    }
    let connect = connect.expect("a connect line");
    assert!(
        connect.contains("-n nqn.2026-11.io.ferrox:default"),
        "{connect}"
    );
    let port: u16 = connect
        .split(" -s ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("a port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let img = d.path().join("default0.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 << 20);
    assert!(d.path().join("node-id").exists());
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
