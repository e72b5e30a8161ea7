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

# A run here builds once from scratch: incremental caches would only cost disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$target_dir"
# Free space (GiB, rounded down) on the file system that holds the build.
free_gib() { df -Pk "$target_dir" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
# A clean run needs about 5 GiB for the test build and 2 GiB more for the release
# build the VM suites use. A full disk shows up as a linker killed by SIGBUS, so say
# it plainly first.
need_gib=7

step "disk: $(free_gib) GiB free for $target_dir"
if (( $(free_gib) < need_gib )); then
    echo "test.sh: warning: a clean run needs about $need_gib GiB; linking may fail" \
        "(a linker killed by SIGBUS means the disk is full)" >&2
fi

step "install test dependencies"
"$here/install-test-deps.sh"

step "cargo fmt --check"
cargo fmt --all -- --check

step "unsafe code is justified"
"$here/check-unsafe.sh"

step "cargo clippy --all-targets -- -D warnings"
cargo clippy -j2 --workspace --all-targets -- -D warnings

step "cargo test"
# The etcd tests start their own members from the etcd binary installed above; with
# this set, a missing binary fails them instead of skipping them.
FERROX_REQUIRE_ETCD=1 cargo test -j2 --workspace

if (( interop )); then
    step "kernel interop suite (VM)"
    # The test binaries have run; when space is short, make room for the release build.
    if (( $(free_gib) < 3 )) && [[ -d $target_dir/debug ]]; then
        echo "test.sh: $(free_gib) GiB free: removing $target_dir/debug (the test build)" \
            "to make room for the release build" >&2
        rm -rf "${target_dir:?}/debug"
    fi
    cargo build -j2 --release -p ferrox -p ferrox-perf -p ferrox-control
    cargo build -j2 --release -p ferrox-nvme --example vfio_verify
    FERROX_BIN="$target_dir/release/ferrox" "$here/interop/suite.sh"

    step "user-space NVMe driver through VFIO on QEMU's NVMe controller (VM)"
    "$here/interop/vfio.sh"

    step "the ferrox daemon exporting a VFIO-attached NVMe drive over NVMe/TCP (VM)"
    FERROX_BIN="$target_dir/release/ferrox" "$here/interop/vfio-export.sh"
fi
step "all tests passed"
