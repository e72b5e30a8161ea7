//! The opt-in TCP listener with mutual TLS, on a running node with a PKI generated at
//! test time: a client with a certificate from the client CA is served (library and
//! `ferroxctl --addr`); a client without a certificate, with one from another CA, or
//! speaking plain text is refused; garbage on the TCP port or the Unix socket harms
//! nothing; an oversized request is refused with `OutOfRange` on both listeners; and
//! bad PEM files are named when loaded.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::volume_service_client::VolumeServiceClient;
use ferrox_control::api::{CreateVolumeRequest, GetNodeInfoRequest, NodeInfo};
use ferrox_control::{BlockingClient, ClientTls, ServerTls};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

fn get_info(c: &BlockingClient) -> Result<NodeInfo, tonic::Status> {
    c.call(|ch| async move {
        NodeServiceClient::new(ch)
            .get_info(GetNodeInfoRequest {})
            .await
            .map(|r| r.into_inner())
    })
}

/// Connects `ep` and calls GetInfo; the error (from connecting or from the call), or
/// a panic if the server answered.
fn refused(ep: Endpoint) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let attempt = async {
            let ch = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
            NodeServiceClient::new(ch)
                .get_info(GetNodeInfoRequest {})
                .await
                .map_err(|s| format!("call: {s:?}"))
        };
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok(_)) => panic!("the server answered a client it must refuse"),
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_string(),
        }
    })
}

/// A request of more than `MAX_REQUEST_BYTES`: a volume label of 2 MiB.
fn oversized(c: &BlockingClient) -> tonic::Status {
    c.call(|ch| async move {
        VolumeServiceClient::new(ch)
            .create(CreateVolumeRequest {
                name: "big".into(),
                size_bytes: 1 << 20,
                labels: [("k".to_string(), "x".repeat(2 << 20))].into(),
                ..Default::default()
            })
            .await
            .expect_err("an oversized request must be refused")
    })
}

#[test]
fn mutual_tls_listener() {
    let d = tempfile::tempdir().unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = support::pki::generate(pki_dir.path());
    let node = support::Node::start(d.path());
    let tls = ServerTls::load(&pki.server_cert, &pki.server_key, &pki.ca).unwrap();
    let addr = node.serve_tcp(tls);
    let url = format!("https://127.0.0.1:{}", addr.port());
    let good = ClientTls::load(&pki.ca, &pki.client_cert, &pki.client_key).unwrap();

    // A client with a certificate from the client CA: by IP address and by DNS name.
    let c = BlockingClient::connect_tls(&url, &good).unwrap();
    let info = get_info(&c).unwrap();
    assert!(info.ready);
    assert!(info.features.iter().any(|f| f == "tcp-mtls-api"));
    let by_name = format!("https://localhost:{}", addr.port());
    get_info(&BlockingClient::connect_tls(&by_name, &good).unwrap()).unwrap();

    // ferroxctl --addr, and --addr without the TLS files.
    let ctl = env!("CARGO_BIN_EXE_ferroxctl");
    let out = std::process::Command::new(ctl)
        .args(["--addr", &url, "--tls-ca"])
        .arg(&pki.ca)
        .arg("--tls-cert")
        .arg(&pki.client_cert)
        .arg("--tls-key")
        .arg(&pki.client_key)
        .args(["-o", "json", "node", "info"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ready"], true, "{j}");
    let out = std::process::Command::new(ctl)
        .args(["--addr", &url, "node", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca"));

    // No client certificate.
    let ca_only = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()));
    let e = refused(
        Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(ca_only)
            .unwrap(),
    );
    // TLS 1.3: the client may see the server's alert (CertificateRequired) or only the
    // connection closing, depending on timing; either way it is not answered.
    assert!(
        !e.contains("timed out"),
        "without a client certificate: {e}"
    );

    // A client certificate from another CA.
    let stranger = ClientTls::load(&pki.ca, &pki.stranger_cert, &pki.stranger_key).unwrap();
    let e = BlockingClient::connect_tls(&url, &stranger).and_then(|c| {
        get_info(&c)
            .map(|_| panic!("a certificate from another CA was accepted"))
            .map_err(|s| format!("{s:?}"))
    });
    let e = e.unwrap_err();
    assert!(
        !e.contains("timed out"),
        "with another CA's certificate: {e}"
    );

    // Plain text (h2c) on the TLS port.
    let e = refused(Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port())).unwrap());
    assert!(!e.contains("timed out"), "plain text: {e}");

    // Garbage: a peer that sends junk, and one that connects and says nothing (held
    // open while the others are served: handshakes do not wait for each other).
    let idle = std::net::TcpStream::connect(addr).unwrap();
    let mut junk = std::net::TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let bytes: Vec<u8> = (0..64u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = junk.write_all(&bytes);
    let mut sink = Vec::new();
    // The server closes the connection (EOF or reset), not waits for more.
    let t = std::time::Instant::now();
    let _ = junk.read_to_end(&mut sink);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "junk was not refused"
    );
    let mut unix_junk = std::os::unix::net::UnixStream::connect(&node.socket).unwrap();
    let _ = unix_junk.write_all(&bytes);
    drop(unix_junk);
    get_info(&node.client()).unwrap();
    get_info(&BlockingClient::connect_tls(&url, &good).unwrap()).unwrap();
    get_info(&c).unwrap();
    drop(idle);

    // Oversized requests: refused with OutOfRange on both listeners, and nothing else
    // is affected.
    for (what, client) in [("tcp", &c), ("unix", &node.client())] {
        let s = oversized(client);
        assert_eq!(s.code(), tonic::Code::OutOfRange, "{what}: {s:?}");
        assert!(s.message().contains("too large"), "{what}: {s:?}");
        get_info(client).unwrap();
    }
}

#[test]
fn bad_pem_files_are_named() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = support::pki::generate(pki_dir.path());
    let junk = pki_dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let missing = pki_dir.path().join("missing.pem");

    let e = ServerTls::load(&missing, &pki.server_key, &pki.ca).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = ServerTls::load(&junk, &pki.server_key, &pki.ca).unwrap_err();
    assert!(
        e.to_string().contains("--tls-cert") && e.to_string().contains("junk.pem"),
        "{e}"
    );
    let e = ServerTls::load(&pki.server_cert, &junk, &pki.ca).unwrap_err();
    assert!(e.to_string().contains("--tls-key"), "{e}");
    let e = ServerTls::load(&pki.server_cert, &pki.server_key, &junk).unwrap_err();
    assert!(e.to_string().contains("--tls-client-ca"), "{e}");
    // A key that is not the certificate's.
    let e = ServerTls::load(&pki.server_cert, &pki.client_key, &pki.ca).unwrap_err();
    assert!(e.to_string().contains("--tls-key"), "mismatched key: {e}");
    let e = ClientTls::load(&pki.ca, &junk, &pki.client_key).unwrap_err();
    assert!(e.contains("--tls-cert"), "{e}");
}
