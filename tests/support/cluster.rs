//! Cluster set-up shared by the multi-node benches: a PKI for mutual TLS between
//! nodes, daemons started on loopback addresses over a real etcd, and blocking
//! calls of their control API through each node's Unix socket.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrox_control::api::node_service_client::NodeServiceClient;
use ferrox_control::api::pool_service_client::PoolServiceClient;
use ferrox_control::api::*;
use ferrox_control::BlockingClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub const MIB: u64 = 1 << 20;

/// A CA and one certificate, server and client, for every address in `ips`.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(dir: &Path, ips: &[&str]) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "cluster CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, "ferrox node");
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &ca).unwrap();
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        cert: write("node.pem", &cert.pem()),
        key: write("node.key", &key.serialize_pem()),
    }
}

/// One daemon of the cluster: its data directory (and Unix socket in it).
pub struct Node {
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `ferrox` (the binary at `bin`) on `ip` with `labels`, over `cluster`,
    /// with its control API on TCP (mutual TLS with `pki`); returns once it is ready.
    pub fn start(
        bin: &str,
        dir: &Path,
        name: &str,
        ip: &str,
        labels: &str,
        cluster: &str,
        pki: &Pki,
    ) -> Self {
        let mut n = Node {
            name: name.into(),
            ip: ip.into(),
            dir: dir.into(),
            child: None,
        };
        n.restart(bin, labels, cluster, pki);
        n
    }

    pub fn restart(&mut self, bin: &str, labels: &str, cluster: &str, pki: &Pki) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let mut child = Command::new(bin)
            .args(["--cores", "0", "--default-size", "16MiB", "--log", "warn"])
            .args(["--listen", &format!("{}:0", self.ip)])
            .args(["--control-tcp", &format!("{}:0", self.ip)])
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--tls-client-ca")
            .arg(&pki.ca)
            .args(["--node-name", &self.name, "--labels", labels])
            .args(["--cluster", cluster])
            .arg("--data-dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ferrox");
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            if line.expect("read ferrox stdout").contains("ferrox: ready") {
                self.child = Some(child);
                return;
            }
        }
        panic!(
            "ferrox {} exited before it was ready: {:?}",
            self.name,
            child.wait()
        );
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM; the daemon must exit 0.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            c.wait().unwrap().code(),
            Some(0),
            "{} exit status",
            self.name
        );
    }

    pub fn client(&self) -> BlockingClient {
        BlockingClient::connect(&self.dir.join("ferrox.sock")).unwrap()
    }

    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.client()
            .call(|ch| async move { NodeServiceClient::new(ch).list(ListNodesRequest {}).await })
            .unwrap()
            .into_inner()
            .nodes
    }

    /// A pool on a sparse file of `size` bytes in the node's directory.
    pub fn create_pool(&self, pool: &str, size: u64) {
        let img = self.dir.join(format!("{pool}.img")).display().to_string();
        let pool = pool.to_string();
        self.client()
            .call(|ch| async move {
                PoolServiceClient::new(ch)
                    .create(CreatePoolRequest {
                        name: pool,
                        base: Some(PoolBase {
                            base: Some(pool_base::Base::Path(img)),
                            size_bytes: size,
                        }),
                        cluster_size: 0,
                        max_overcommit: 0,
                    })
                    .await
            })
            .unwrap();
    }

    /// Polls the node list until `ok`; panics after `patience`.
    pub fn wait_nodes(&self, what: &str, patience: Duration, ok: impl Fn(&[ClusterNode]) -> bool) {
        let deadline = Instant::now() + patience;
        loop {
            let got = self.nodes();
            if ok(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: after {patience:?} still {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
