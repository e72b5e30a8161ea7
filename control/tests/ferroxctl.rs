//! `ferroxctl` against a live control server: tables, JSON, sizes with units, exit
//! codes and the server's message on errors, help with examples.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

mod support;

use std::process::Command;

use support::Node;

fn ctl(node: &Node, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
        .arg("--socket")
        .arg(&node.socket)
        .args(args)
        .output()
        .expect("run ferroxctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(node: &Node, args: &[&str]) -> String {
    let (code, out, err) = ctl(node, args);
    assert_eq!(code, 0, "ferroxctl {args:?}: {err}");
    out
}

fn fails(node: &Node, args: &[&str], needle: &str) {
    let (code, _, err) = ctl(node, args);
    assert_ne!(code, 0, "ferroxctl {args:?} should fail");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

#[test]
fn every_command_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let img = d.path().join("p0.img").display().to_string();

    let out = ok(&node, &["node", "info"]);
    assert!(out.contains("REACTOR") && out.contains("node id"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&node, &["-o", "json", "node", "info"])).unwrap();
    assert_eq!(json["ready"], true);

    let out = ok(
        &node,
        &["pool", "create", "p0", "--path", &img, "--size", "64MiB"],
    );
    assert!(out.contains("p0") && out.contains("online"), "{out}");
    ok(
        &node,
        &["pool", "create", "p0", "--path", &img, "--size", "64MiB"],
    );
    fails(
        &node,
        &["pool", "create", "p0", "--path", &img, "--size", "32MiB"],
        "AlreadyExists",
    );
    let out = ok(&node, &["pool", "list"]);
    assert!(out.contains("64 MiB") || out.contains("63 MiB"), "{out}");

    let out = ok(
        &node,
        &[
            "volume", "create", "v1", "--size", "8MiB", "--thin", "--label", "a=b",
        ],
    );
    assert!(
        out.contains("8 MiB") && out.contains("thin") && out.contains("a=b"),
        "{out}"
    );
    fails(
        &node,
        &["volume", "create", "v2", "--size", "0"],
        "size_bytes",
    );
    // More than one copy needs a cluster; past the most placed is a bad argument.
    fails(
        &node,
        &[
            "volume",
            "create",
            "v2",
            "--size",
            "8MiB",
            "--replicas",
            "2",
            "--spread",
            "zone",
        ],
        "--cluster",
    );
    fails(
        &node,
        &[
            "volume",
            "create",
            "v2",
            "--size",
            "8MiB",
            "--replicas",
            "6",
        ],
        "replicas",
    );
    fails(
        &node,
        &["volume", "create", "v2", "--size", "1000"],
        "size_bytes",
    );
    fails(
        &node,
        &["volume", "create", "bad/name", "--size", "1MiB"],
        "name",
    );
    fails(
        &node,
        &["volume", "create", "v2", "--size", "12 parsecs"],
        "unit",
    );
    fails(&node, &["volume", "get", "ghost"], "NotFound");
    let out = ok(&node, &["volume", "resize", "v1", "--size", "16MiB"]);
    assert!(out.contains("16 MiB"), "{out}");

    let out = ok(&node, &["volume", "stats", "v1"]);
    assert!(out.contains("not published"), "{out}");
    let out = ok(&node, &["volume", "publish", "v1", "--any-host"]);
    assert!(
        out.contains("nvme connect -t tcp -a 127.0.0.1 -s ")
            && out.contains("-n nqn.2026-11.io.ferrox:volume:v1"),
        "{out}"
    );
    let out = ok(&node, &["volume", "stats", "v1", "--window", "100ms"]);
    assert!(
        out.contains("0 controller(s) connected") && out.contains("no I/O in the window"),
        "{out}"
    );
    fails(&node, &["volume", "stats", "v1", "--window", "20s"], "10s");
    fails(
        &node,
        &["volume", "publish", "v1", "--host", "bogus"],
        "hosts",
    );
    let out = ok(&node, &["subsystem", "list"]);
    assert!(out.contains("nqn.2026-11.io.ferrox:volume:v1"), "{out}");

    ok(&node, &["snapshot", "create", "v1", "s1", "--group", "g"]);
    ok(&node, &["snapshot", "clone", "s1", "c1"]);
    let out = ok(&node, &["snapshot", "list"]);
    assert!(out.contains("s1") && out.contains("c1"), "{out}");
    fails(&node, &["snapshot", "delete", "s1"], "FailedPrecondition");

    let v: serde_json::Value =
        serde_json::from_str(&ok(&node, &["volume", "list", "-o", "json"])).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c1", "v1"]);

    ok(&node, &["volume", "unpublish", "v1"]);
    ok(&node, &["volume", "delete", "c1"]);
    let out = ok(&node, &["volume", "delete", "c1"]);
    assert!(out.contains("did not exist"), "{out}");
    ok(&node, &["snapshot", "delete", "s1"]);
    ok(&node, &["volume", "delete", "v1"]);
    ok(&node, &["pool", "destroy", "p0"]);
    assert!(!d.path().join("p0.img").exists());
}

#[test]
fn help_has_an_example_on_every_subcommand() {
    let cmds: &[&[&str]] = &[
        &["node", "info"],
        &["node", "list"],
        &["node", "get"],
        &["node", "cordon"],
        &["node", "uncordon"],
        &["pool", "create"],
        &["pool", "import"],
        &["pool", "list"],
        &["pool", "get"],
        &["pool", "destroy"],
        &["pool", "export"],
        &["volume", "create"],
        &["volume", "resize"],
        &["volume", "delete"],
        &["volume", "list"],
        &["volume", "get"],
        &["volume", "publish"],
        &["volume", "unpublish"],
        &["snapshot", "create"],
        &["snapshot", "delete"],
        &["snapshot", "clone"],
        &["snapshot", "list"],
        &["subsystem", "list"],
    ];
    for c in cmds {
        let out = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
            .args(*c)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{c:?}");
        assert!(
            text.contains("ferroxctl "),
            "no example in {c:?} --help: {text}"
        );
    }
}

#[test]
fn node_get_and_cordon_on_a_lone_node() {
    let d = tempfile::tempdir().unwrap();
    let node = Node::start(d.path());
    let info: serde_json::Value =
        serde_json::from_str(&ok(&node, &["-o", "json", "node", "info"])).unwrap();
    let name = info["node_name"].as_str().unwrap().to_string();
    let out = ok(&node, &["node", "list"]);
    assert!(out.contains("CORDONED") && out.contains("LEADER"), "{out}");
    let out = ok(&node, &["node", "get", &name]);
    assert!(out.contains(&format!("name       {name}")), "{out}");
    assert!(
        out.contains("cordoned   no") && out.contains("orphans    -"),
        "{out}"
    );
    fails(
        &node,
        &["node", "get", "nosuchnode"],
        "no node named \"nosuchnode\"",
    );
    // Cordoning is about placement over a cluster: without one, said so.
    fails(&node, &["node", "cordon", &name], "needs a cluster");
    fails(&node, &["node", "uncordon", &name], "needs a cluster");
}

#[test]
fn no_daemon_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
        .arg("--socket")
        .arg(d.path().join("none.sock"))
        .args(["pool", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.sock"));
}

#[test]
fn a_decimal_size_is_refused_with_both_readings() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["volume", "create", "v1", "--size", "10GB"],
            "\"10GB\": GB is decimal (10,000,000,000 bytes) but ferroxctl read it as 10 GiB \
             before; write 10GiB or 10G for binary, or 10000000000",
        ),
        (
            &["volume", "resize", "v1", "--size", "10gb"],
            "\"10gb\": gb is decimal (10,000,000,000 bytes) but ferroxctl read it as 10 GiB",
        ),
        (
            &[
                "pool",
                "create",
                "p0",
                "--path",
                "/tmp/p0.img",
                "--size",
                "20TB",
            ],
            "write 20TiB or 20T for binary, or 20000000000000",
        ),
        (
            &[
                "pool",
                "create",
                "p0",
                "--bdev",
                "b0",
                "--cluster-size",
                "4mb",
            ],
            "write 4MiB or 4M for binary, or 4000000",
        ),
    ];
    for (args, needle) in cases {
        // Refused while parsing the command line: no daemon is needed.
        let out = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
            .arg("--socket")
            .arg(d.path().join("none.sock"))
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
