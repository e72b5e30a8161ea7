#!/usr/bin/env bash
# bench.sh — Ferrox vs the kernel's nvmet-tcp target, side by side in one VM, same kernel
# initiator, same fio jobs, interleaved A B A B (ROUNDS rounds):
#   A  kernel nvmet-tcp on a brd RAM disk (configfs), 127.0.0.1:4421
#   B  ferrox on a malloc bdev of the same size, 127.0.0.1:4420
# Jobs (RUNTIME s each, 2 s ramp): 4 KiB randread QD32, 4 KiB randwrite QD32, 128 KiB
# sequential read QD8.  Prints a table of IOPS, mean and p99 latency per job and target
# and the ratio Ferrox/kernel; fio's JSON goes to the log directory.
#
# From the host:   scripts/interop/bench.sh
# Environment: FERROX_BIN, BENCH_OUT (host log dir, default target/interop/bench),
#   RUNTIME (20), ROUNDS (2), SIZE_MIB (256), FERROX_CORES ("0, 1"),
#   FERROX_POLL_MODE (adaptive), VM_MEM (3072), VM_CPUS (2), VM_TIMEOUT (1800).
#
# Under TCG absolute figures mean nothing (see scripts/interop/README.md): only the ratio of figures measured in the same run is evidence, and the target,
# the initiator and fio all share the guest's vCPUs; the header states that CPU budget.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

if [[ -z ${VM_GUEST:-} ]]; then
    bin=${FERROX_BIN:-}
    if [[ -z $bin ]]; then
        for b in "$repo/target/release/ferrox" "$repo/target/debug/ferrox"; do
            [[ -x $b ]] && { bin=$b; break; }
        done
    fi
    [[ -n $bin && -x $bin ]] || { echo "bench: no ferrox binary (cargo build --release, or set FERROX_BIN)" >&2; exit 2; }
    [[ $bin == */target/debug/* ]] && echo "bench: warning: $bin is a debug build" >&2
    bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")
    out=${BENCH_OUT:-$repo/target/interop/bench}
    mkdir -p "$out"
    find "$out" -mindepth 1 -delete
    exec "$here/run-in-vm" --mem "${VM_MEM:-3072}" --cpus "${VM_CPUS:-2}" --timeout "${VM_TIMEOUT:-1800}" \
        --share "$out" --env "FERROX_BIN=$bin" --env RUNTIME --env ROUNDS --env SIZE_MIB \
        --env FERROX_CORES --env FERROX_POLL_MODE --env FERROX_LOG_LEVEL \
        -- "$here/${0##*/}" "$@"
fi

# shellcheck source=lib.sh
source "$here/lib.sh"

RUNTIME=${RUNTIME:-20}
ROUNDS=${ROUNDS:-2}
SIZE_MIB=${SIZE_MIB:-256}
ADDR=127.0.0.1
K_NQN=nqn.2026-11.io.ferrox:bench-kernel K_PORT=4421
F_NQN=nqn.2026-11.io.ferrox:bench K_PORT_ID=1 F_PORT=4420
OUT=$INTEROP_OUT
WORK=/tmp/ferrox-bench
CONFIG=$WORK/ferrox.toml
# name rw bs iodepth
JOBS=("randread-4k randread 4k 32" "randwrite-4k randwrite 4k 32" "read-128k read 128k 8")
export FERROX_LOG_LEVEL=${FERROX_LOG_LEVEL:-warn}   # keep logging out of the measurement

mkdir -p "$WORK" "$OUT"
cat > "$CONFIG" <<EOF
[reactor]
cores = [${FERROX_CORES:-0, 1}]
poll_mode = "${FERROX_POLL_MODE:-adaptive}"

[[bdev]]
name = "mem0"
kind = "malloc"
size = "${SIZE_MIB}MiB"
block_size = 512

[[subsystem]]
nqn = "$F_NQN"
serial = "FERROXBENCH0001"
model = "Ferrox bench"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "mem0"

[[subsystem.listener]]
address = "$ADDR"
port = $F_PORT
EOF
cp "$CONFIG" "$OUT/ferrox.toml"

cleanup() {
    set +e
    nvme disconnect -n "$F_NQN" >/dev/null 2>&1
    ferrox_stop 10 >/dev/null 2>&1
    nvmet_teardown
}
trap cleanup EXIT

# attach NQN PORT: connect, print the namespace device.
attach() {
    nvme connect -t tcp -a "$ADDR" -s "$2" -n "$1" >/dev/null || fail "connect $1" "nvme connect exited $?"
    nvme_wait_dev "$1" 30 || fail "connect $1" "no namespace block device"
}
detach() {
    nvme disconnect -n "$1" >/dev/null || fail "disconnect $1" "nvme disconnect exited $?"
    nvme_wait_gone "$1" 30 || fail "disconnect $1" "controller still present"
}

# run_jobs TARGET ROUND DEV: every job once, JSON in $OUT/TARGET-JOB-rROUND.json.
run_jobs() {
    local target=$1 round=$2 dev=$3 j name rw bs qd
    for j in "${JOBS[@]}"; do
        read -r name rw bs qd <<<"$j"
        fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio --rw="$rw" --bs="$bs" \
            --iodepth="$qd" --size="${SIZE_MIB}M" --time_based --runtime="$RUNTIME" --ramp_time=2 \
            --norandommap --randrepeat=0 --lat_percentiles=1 --output-format=json \
            --output="$OUT/$target-$name-r$round.json" >/dev/null 2>"$OUT/$target-$name-r$round.err" ||
            fail "fio $target $name" "exited $? (see $OUT/$target-$name-r$round.err)"
        echo "  $target round $round $name done"
    done
}

modprobe nvme-tcp || fail modprobe "nvme-tcp"
nvmet_setup "$K_NQN" "$ADDR" "$K_PORT" "$SIZE_MIB" "$K_PORT_ID" || fail nvmet "configfs setup"
# Fill the RAM disk so reads touch real pages (unwritten brd pages read as zeros for free).
dd if=/dev/urandom of=/dev/ram0 bs=1M count="$SIZE_MIB" oflag=direct status=none || fail nvmet "prefill"
echo "bench: $(nproc) vCPU shared by target + initiator + fio; ferrox cores [${FERROX_CORES:-0, 1}]," \
     "poll_mode ${FERROX_POLL_MODE:-adaptive}; kernel nvmet-tcp uses kernel workqueues; ${SIZE_MIB} MiB;" \
     "${RUNTIME}s per job, $ROUNDS rounds A B"

for (( r = 1; r <= ROUNDS; r++ )); do
    step "round $r: A kernel nvmet-tcp (brd)"
    dev=$(attach "$K_NQN" "$K_PORT")
    run_jobs kernel "$r" "$dev"
    detach "$K_NQN"

    step "round $r: B ferrox (malloc)"
    ferrox_start "$CONFIG" "$ADDR:$F_PORT" --data-dir "$WORK/data" || fail ferrox "did not start (log $FERROX_LOG)"
    dev=$(attach "$F_NQN" "$F_PORT")
    fio --name=prefill --filename="$dev" --direct=1 --ioengine=libaio --rw=write --bs=128k \
        --iodepth=8 --size="${SIZE_MIB}M" --eta=never --output=/dev/null || fail ferrox "prefill"
    run_jobs ferrox "$r" "$dev"
    detach "$F_NQN"
    ferrox_stop 20
done
pass "bench runs complete"

python3 - "$OUT" "$ROUNDS" "${JOBS[@]}" <<'EOF'
import json, sys
out, rounds, jobs = sys.argv[1], int(sys.argv[2]), [j.split() for j in sys.argv[3:]]

def load(target, name, rw, r):
    j = json.load(open(f"{out}/{target}-{name}-r{r}.json"))["jobs"][0]
    d = j["write" if "write" in rw else "read"]
    lat = d.get("lat_ns") or d["clat_ns"]
    pct = lat.get("percentile") or d["clat_ns"].get("percentile", {})
    return d["iops"], lat["mean"] / 1000.0, pct.get("99.000000", 0) / 1000.0

rows = []
hdr = f"{'job':<14} {'target':<7} {'IOPS':>9} {'mean us':>9} {'p99 us':>9}   per-round IOPS"
print(hdr); print("-" * len(hdr))
summary = []
for name, rw, bs, qd in jobs:
    res = {}
    for t in ("kernel", "ferrox"):
        runs = [load(t, name, rw, r) for r in range(1, rounds + 1)]
        avg = [sum(x[i] for x in runs) / len(runs) for i in range(3)]
        res[t] = avg
        print(f"{name:<14} {t:<7} {avg[0]:>9.0f} {avg[1]:>9.0f} {avg[2]:>9.0f}   "
              + " ".join(f"{x[0]:.0f}" for x in runs))
    k, f = res["kernel"], res["ferrox"]
    ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"
    summary.append((f"{name} (QD{qd})", ratio(f[0], k[0]), ratio(f[1], k[1]), ratio(f[2], k[2])))
print()
print(f"{'ferrox/kernel':<22} {'IOPS':>6} {'mean lat':>9} {'p99 lat':>8}")
for s in summary:
    print(f"{s[0]:<22} {s[1]:>6} {s[2]:>9} {s[3]:>8}")
EOF
