//! Real etcd members for tests: each [`EtcdCluster`] starts its own `etcd` processes
//! on free loopback ports with temporary data directories, waits until every member
//! answers `/health` (bounded), and stops them when dropped (SIGTERM, then SIGKILL of
//! the same process after a grace period: a member that lost quorum is slow to exit).
//!
//! The `etcd` binary is Debian's `etcd-server` (`scripts/install-test-deps.sh`), or
//! the one `FERROX_ETCD` names. When it is missing, [`EtcdCluster::start`] answers
//! `None` and the test skips with a message — unless `FERROX_REQUIRE_ETCD` is set
//! (CI sets it), then it panics.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the members may take to become healthy.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long a stopped member may take to exit after SIGTERM before SIGKILL.
const STOP_PATIENCE: Duration = Duration::from_secs(5);
/// Attempts at starting a cluster (a free port may be taken between the probe and
/// etcd's bind).
const START_ATTEMPTS: usize = 3;

/// One member: its process (None once stopped) and its client URL.
struct Member {
    bin: PathBuf,
    initial_cluster: String,
    name: String,
    child: Option<Child>,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
}

/// etcd members started by a test; stopped on drop.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

/// The `etcd` binary: `FERROX_ETCD`, or `etcd` on the PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERROX_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// Whether a missing etcd fails the test instead of skipping it.
pub fn etcd_required() -> bool {
    std::env::var_os("FERROX_REQUIRE_ETCD").is_some_and(|v| !v.is_empty() && v != "0")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether the member at `client_url` (`http://127.0.0.1:P`) answers healthy.
fn healthy(client_url: &str) -> bool {
    let Some(hostport) = client_url.strip_prefix("http://") else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect(hostport) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /health HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(64 << 10).read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Member {
    fn spawn(&mut self, state: &str) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "ferrox-test"])
            // Short raft timers: quick elections, and leases down to 1 s.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then SIGKILL of the same process if it has not exited in time.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        sigterm(c.id());
        let deadline = Instant::now() + STOP_PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until each is healthy; `None` (after saying why
    /// on stderr) when there is no etcd binary and `FERROX_REQUIRE_ETCD` is unset.
    pub fn start(n: usize) -> Option<Self> {
        let Some(bin) = etcd_binary() else {
            assert!(
                !etcd_required(),
                "FERROX_REQUIRE_ETCD is set but there is no etcd binary (install Debian's \
                 etcd-server: scripts/install-test-deps.sh, or set FERROX_ETCD)"
            );
            eprintln!(
                "SKIPPED: no etcd binary on the PATH (install etcd-server, or set FERROX_ETCD); \
                 set FERROX_REQUIRE_ETCD=1 to make this a failure"
            );
            return None;
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, n) {
                Ok(c) => return Some(c),
                Err(e) => last = e,
            }
        }
        panic!(
            "cannot start {n} etcd member(s) with {}: {last}",
            bin.display()
        );
    }

    fn try_start(bin: &Path, n: usize) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                bin: bin.to_path_buf(),
                initial_cluster: String::new(),
                name: format!("m{i}"),
                child: None,
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("m{i}")),
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let initial = initial.join(",");
        let mut me = Self { members, _dir: dir };
        for m in &mut me.members {
            m.initial_cluster = initial.clone();
            m.spawn("new").map_err(|e| format!("spawn: {e}"))?;
        }
        me.wait_healthy()?;
        Ok(me)
    }

    /// Waits until every running member answers healthy (bounded).
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let mut all = true;
            for m in &mut self.members {
                if let Some(c) = &mut m.child {
                    if let Ok(Some(st)) = c.try_wait() {
                        let log = std::fs::read_to_string(m.data_dir.with_extension("log"))
                            .unwrap_or_default();
                        return Err(format!("member {} exited ({st}): {log}", m.name));
                    }
                    all &= healthy(&m.client_url);
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not healthy within {START_PATIENCE:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URLs joined by commas (`--cluster`'s form).
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// Kills member `i` with SIGKILL (a crash).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Stops member `i` (SIGTERM, then SIGKILL).
    pub fn stop(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts stopped member `i` again on its data directory and ports, and waits
    /// until every running member is healthy.
    pub fn restart(&mut self, i: usize) {
        self.members[i]
            .spawn("existing")
            .expect("restart an etcd member");
        if let Err(e) = self.wait_healthy() {
            panic!("etcd member m{i} after a restart: {e}");
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // SIGTERM to all first: members that lose their quorum one by one are slow.
        for m in &self.members {
            if let Some(c) = &m.child {
                sigterm(c.id());
            }
        }
        for m in &mut self.members {
            m.stop();
        }
    }
}
