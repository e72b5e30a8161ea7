#!/usr/bin/env bash
# vfio-bench.sh — Ferrox's user-space NVMe driver versus the kernel's nvme driver on the
# same emulated device (QEMU NVMe behind an emulated IOMMU), in one VM. Not run by CI.
#
#   A  kernel nvme driver: fio, io_uring engine, O_DIRECT, on /dev/nvmeXnY
#   B  Ferrox's driver:    ferrox-perf pcie://BDF (busy-polled reactor)
# Jobs (RUNTIME s each): 4 KiB randread QD32, 128 KiB sequential read QD8; fio and the
# reactor pinned to the same vCPU (BENCH_CPU). Interleaved A B A B, ROUNDS rounds, the
# device rebound between drivers each time. Then the CPU an idle ferrox daemon that owns
# the device uses over IDLE_S seconds (utime + stime from /proc/PID/stat), in adaptive
# and in busy poll mode, with a kernel initiator connected over NVMe/TCP (so the reactor
# has the controller's queue pair) and no I/O.
#
# From the host (build first):
#   cargo build --release -p ferrox -p ferrox-perf
#   scripts/interop/vfio-bench.sh
# Environment: FERROX_BIN, FERROX_PERF_BIN (default target/release/...), BENCH_OUT (host
#   log dir, default target/interop/vfio-bench), RUNTIME (10), ROUNDS (2), IDLE_S (5),
#   NVME_MB (256), BENCH_CPU (1), VM_CPUS (2), VM_TIMEOUT (1200).
#
# Under TCG the absolute figures mean little (the device model and the guest share the
# host's CPUs); the ratio of figures measured in the same run is the evidence.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
NVME_MB=${NVME_MB:-256}

if [[ -z ${VM_GUEST:-} ]]; then
    pick() {   # NAME ENV_VALUE
        local b=$2
        [[ -z $b && -x $repo/target/release/$1 ]] && b=$repo/target/release/$1
        [[ -z $b && -x ${CARGO_TARGET_DIR:-/nonexistent}/release/$1 ]] && b=$CARGO_TARGET_DIR/release/$1
        [[ -n $b && -x $b ]] || { echo "vfio-bench: no $1 (cargo build --release -p ferrox -p ferrox-perf)" >&2; exit 2; }
        echo "$(cd "$(dirname "$b")" && pwd -P)/$(basename "$b")"
    }
    bin=$(pick ferrox "${FERROX_BIN:-}")
    perf=$(pick ferrox-perf "${FERROX_PERF_BIN:-}")
    out=${BENCH_OUT:-$repo/target/interop/vfio-bench}
    mkdir -p "$out"
    find "$out" -mindepth 1 -delete
    exec "$here/run-in-vm" --cpus "${VM_CPUS:-2}" --timeout "${VM_TIMEOUT:-1200}" --nvme "$NVME_MB" \
        --share "$out" --env "FERROX_BIN=$bin" --env "FERROX_PERF_BIN=$perf" --env "NVME_MB=$NVME_MB" \
        --env RUNTIME --env ROUNDS --env IDLE_S --env BENCH_CPU \
        -- "$here/${0##*/}" "$@"
fi

# shellcheck source=lib.sh
source "$here/lib.sh"
RUNTIME=${RUNTIME:-10}
ROUNDS=${ROUNDS:-2}
IDLE_S=${IDLE_S:-5}
CPU=${BENCH_CPU:-1}
OUT=$INTEROP_OUT
WORK=/tmp/ferrox-vfio-bench
NQN=nqn.2026-11.io.ferrox:vfio-bench
# name rw bs qd
JOBS=("randread-4k randread 4k 32" "read-128k read 128k 8")
mkdir -p "$WORK" "$OUT"
export FERROX_LOG_LEVEL=warn

cleanup() {
    set +e
    nvme disconnect -n "$NQN" >/dev/null 2>&1
    ferrox_stop 10 >/dev/null 2>&1
}
trap cleanup EXIT

bdf=$(qemu_nvme_bdf) || fail find "no QEMU NVMe controller"
modprobe nvme-tcp || fail modprobe nvme-tcp
blk=$(pci_bind_nvme "$bdf" 15) || fail bind "kernel nvme did not bind $bdf"
# Written blocks, so neither driver reads holes of the sparse backing file.
dd if=/dev/urandom of="$blk" bs=1M count="$NVME_MB" oflag=direct status=none || fail prefill "dd"
echo "vfio-bench: $bdf ($NVME_MB MiB), $(nproc) vCPU, fio and the reactor on CPU $CPU, ${RUNTIME}s per job, $ROUNDS rounds A B"

for (( r = 1; r <= ROUNDS; r++ )); do
    step "round $r: A kernel nvme driver (fio io_uring O_DIRECT)"
    blk=$(pci_bind_nvme "$bdf" 15) || fail bind "kernel nvme did not bind $bdf"
    for j in "${JOBS[@]}"; do
        read -r name rw bs qd <<<"$j"
        fio --name="$name" --filename="$blk" --direct=1 --ioengine=io_uring --rw="$rw" --bs="$bs" \
            --iodepth="$qd" --cpus_allowed="$CPU" --time_based --runtime="$RUNTIME" \
            --norandommap --randrepeat=0 --output-format=json \
            --output="$OUT/kernel-$name-r$r.json" >/dev/null 2>"$OUT/kernel-$name-r$r.err" ||
            fail "fio $name" "exited $? (see $OUT/kernel-$name-r$r.err)"
    done
    step "round $r: B Ferrox driver (ferrox-perf pcie://$bdf)"
    pci_bind_vfio "$bdf" || fail bind "vfio-pci did not bind $bdf"
    for j in "${JOBS[@]}"; do
        read -r name rw bs qd <<<"$j"
        "$FERROX_PERF_BIN" "pcie://$bdf" --rw "$rw" --bs "$bs" --qd "$qd" --cores "$CPU" \
            --time "$RUNTIME" --json > "$OUT/ferrox-$name-r$r.json" 2>"$OUT/ferrox-$name-r$r.err" ||
            fail "ferrox-perf $name" "exited $? (see $OUT/ferrox-$name-r$r.err)"
    done
done
pass "A/B runs complete"

# ---------------------------------------------------------------- idle CPU of the daemon
cat > "$WORK/base.toml" <<EOF
[pool]
hugepages = false

[[bdev]]
name = "nvme0"
kind = "nvme"
pci = "$bdf"

[[subsystem]]
nqn = "$NQN"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "nvme0n1"

[[subsystem.listener]]
address = "127.0.0.1"
port = 4420
EOF
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for mode in adaptive busy; do
    step "idle ferrox daemon owning $bdf, poll_mode $mode, host connected, ${IDLE_S}s"
    { printf '[reactor]\ncores = [%s]\npoll_mode = "%s"\n\n' "$CPU" "$mode"; cat "$WORK/base.toml"; } > "$WORK/$mode.toml"
    ferrox_start "$WORK/$mode.toml" 127.0.0.1:4420 --data-dir "$WORK/data" --no-control ||
        fail ferrox "did not start ($mode)"
    nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" >/dev/null || fail connect "nvme connect"
    nvme_wait_dev "$NQN" 30 >/dev/null || fail connect "no namespace block device"
    t0=$(ticks "$FERROX_PID") s0=$(date +%s.%N)
    sleep "$IDLE_S"   # the measurement window, not a synchronisation
    t1=$(ticks "$FERROX_PID") s1=$(date +%s.%N)
    awk -v m="$mode" -v d=$(( t1 - t0 )) -v hz="$hz" -v a="$s0" -v b="$s1" \
        'BEGIN { printf "%s %.3f %.2f\n", m, d / hz, 100 * d / hz / (b - a) }' >> "$OUT/idle.txt"
    nvme disconnect -n "$NQN" >/dev/null || fail disconnect "nvme disconnect"
    nvme_wait_gone "$NQN" 30 || fail disconnect "controller still present"
    ferrox_stop 20
    [[ $FERROX_EXIT == 0 ]] || fail ferrox "exit status $FERROX_EXIT ($mode)"
done
pass "idle CPU measured"

python3 - "$OUT" "$ROUNDS" "${JOBS[@]}" <<'EOF'
import json, sys
out, rounds, jobs = sys.argv[1], int(sys.argv[2]), [j.split() for j in sys.argv[3:]]
def kernel(name, r):
    d = json.load(open(f"{out}/kernel-{name}-r{r}.json"))["jobs"][0]["read"]
    return d["iops"], d["bw_bytes"] / 2**20, d["clat_ns"]["mean"] / 1000
def ferrox(name, r):
    t = json.load(open(f"{out}/ferrox-{name}-r{r}.json"))["total"]
    return t["iops"], t["mib_s"], t["latency"]["mean_us"]
print(f"{'job':<16} {'driver':<14} {'IOPS':>9} {'MiB/s':>8} {'mean us':>8}   per-round IOPS")
for name, rw, bs, qd in jobs:
    avg = {}
    for label, f in (("kernel nvme", kernel), ("ferrox vfio", ferrox)):
        runs = [f(name, r) for r in range(1, rounds + 1)]
        avg[label] = [sum(x[i] for x in runs) / rounds for i in range(3)]
        a = avg[label]
        print(f"{name + ' QD' + qd:<16} {label:<14} {a[0]:>9.0f} {a[1]:>8.1f} {a[2]:>8.1f}   "
              + " ".join(f"{x[0]:.0f}" for x in runs))
    k, fx = avg["kernel nvme"], avg["ferrox vfio"]
    print(f"{'':<16} {'ferrox/kernel':<14} {fx[0] / k[0]:>9.2f} {fx[1] / k[1]:>8.2f} {fx[2] / k[2]:>8.2f}")
print()
print("idle ferrox daemon owning the device (host connected, no I/O):")
for line in open(f"{out}/idle.txt"):
    m, s, pct = line.split()
    print(f"  poll_mode {m:<8} {s} CPU-s over the window = {pct}% of one CPU")
EOF
