//! `ferrox --control-tcp`: refused (exit 2, the missing flag or the bad file named)
//! without complete, readable, valid TLS files; with them the daemon prints where it
//! listens and serves a client holding a certificate from the client CA.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

// The PKI the control-plane TLS tests generate (rcgen, at test time).
#[allow(dead_code)]
#[path = "../control/tests/support/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::GetNodeInfoRequest;

fn ferrox(data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrox"));
    c.args([
        "--cores",
        "0",
        "--listen",
        "127.0.0.1:0",
        "--default-size",
        "16MiB",
    ])
    .arg("--data-dir")
    .arg(data)
    .args(args);
    c
}

fn refused(data: &Path, args: &[&str], needles: &[&str]) {
    let out = ferrox(data, args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
}

#[test]
fn control_tcp_needs_valid_tls_files() {
    let d = tempfile::tempdir().unwrap();
    let p = tempfile::tempdir().unwrap();
    let pki = pki::generate(p.path());
    let s = |p: &Path| p.display().to_string();
    let junk = p.path().join("junk.pem");
    std::fs::write(&junk, "junk\n").unwrap();
    let missing = p.path().join("missing.pem");
    let tcp = ["--control-tcp", "127.0.0.1:0"];

    refused(
        d.path(),
        &tcp,
        &["--tls-cert", "--tls-key", "--tls-client-ca"],
    );
    refused(
        d.path(),
        &[&tcp[..], &["--tls-cert", &s(&pki.server_cert)]].concat(),
        &["--tls-key"],
    );
    refused(
        d.path(),
        &["--tls-cert", &s(&pki.server_cert)],
        &["--control-tcp"],
    );
    let with = |cert: &Path, key: &Path, ca: &Path| {
        let v = [
            "--control-tcp",
            "127.0.0.1:0",
            "--tls-cert",
            &s(cert),
            "--tls-key",
            &s(key),
            "--tls-client-ca",
            &s(ca),
        ];
        v.map(str::to_string)
    };
    let args = with(&missing, &pki.server_key, &pki.ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(d.path(), &args, &["--tls-cert", "missing.pem"]);
    let args = with(&pki.server_cert, &junk, &pki.ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(d.path(), &args, &["--tls-key", "junk.pem"]);
    let args = with(&pki.server_cert, &pki.server_key, &junk);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(d.path(), &args, &["--tls-client-ca", "junk.pem"]);
}

#[test]
fn control_tcp_serves_a_client_with_a_certificate() {
    let d = tempfile::tempdir().unwrap();
    let p = tempfile::tempdir().unwrap();
    let pki = pki::generate(p.path());
    let mut child = ferrox(d.path(), &["--control-tcp", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .arg("--tls-client-ca")
        .arg(&pki.ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferrox");
    let mut url = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("ferrox: control API on ") {
            url = u.split_whitespace().next().map(str::to_string);
        }
        if line.contains("ferrox: ready") {
            break;
        }
    }
    let url = url.expect("the daemon prints its control TCP address");
    let tls = ferrox_control::ClientTls::load(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();
    let c = ferrox_control::BlockingClient::connect_tls(&url, &tls).unwrap();
    let info = c.call(|ch| async move {
        NodeServiceClient::new(ch)
            .get_info(GetNodeInfoRequest {})
            .await
            .map(|r| r.into_inner())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(info.unwrap().ready);
}
