#!/usr/bin/env bash
# test.sh — install what the tests need, then run every quality gate and test:
#   formatting, clippy (warnings are errors), the unsafe-justification check,
#   the workspace's unit and integration tests, and the kernel-interop suite in a VM.
#
# Usage: scripts/test.sh [--no-interop]      (as root, or with sudo for the apt step)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/.." && pwd -P)
cd "$repo"
interop=1
[[ ${1:-} == --no-interop ]] && interop=0

step() { printf '\n==== %s\n' "$*"; }

step "install test dependencies"
"$here/install-test-deps.sh"

step "cargo fmt --check"
cargo fmt --all -- --check

step "unsafe code is justified"
"$here/check-unsafe.sh"

step "cargo clippy --all-targets -- -D warnings"
cargo clippy -j2 --workspace --all-targets -- -D warnings

step "cargo test"
cargo test -j2 --workspace

if (( interop )); then
    step "kernel interop suite (VM)"
    cargo build -j2 --release -p ferrox -p ferrox-perf -p ferrox-control
    cargo build -j2 --release -p ferrox-nvme --example vfio_verify
    FERROX_BIN="$repo/target/release/ferrox" "$here/interop/suite.sh"

    step "user-space NVMe driver through VFIO on QEMU's NVMe controller (VM)"
    "$here/interop/vfio.sh"

    step "the ferrox daemon exporting a VFIO-attached NVMe drive over NVMe/TCP (VM)"
    FERROX_BIN="$repo/target/release/ferrox" "$here/interop/vfio-export.sh"
fi
step "all tests passed"
