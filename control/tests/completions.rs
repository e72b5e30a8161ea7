//! `ferroxctl completions SHELL` prints a script without a daemon; the bash one is
//! valid bash (`bash -n`) and completes the subcommands.
// An integration-test crate is all tests; the lint is meant for library code.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

fn completions(shell: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
        .args(["--socket", "/nonexistent/ferrox.sock", "completions", shell])
        .output()
        .expect("run ferroxctl");
    assert!(out.status.success(), "{shell}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completion_scripts_for_bash_zsh_fish() {
    let bash = completions("bash");
    for word in ["pool", "volume", "snapshot", "subsystem", "publish"] {
        assert!(bash.contains(word), "bash script lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferroxctl.bash");
    std::fs::write(&path, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output();
    if let Ok(o) = check {
        assert!(
            o.status.success(),
            "bash -n: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(completions("zsh").starts_with("#compdef ferroxctl"));
    assert!(completions("fish").contains("complete -c ferroxctl"));
    let bad = Command::new(env!("CARGO_BIN_EXE_ferroxctl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
