#!/usr/bin/env bash
# vfio-export.sh — the whole path through Ferrox's user-space NVMe PCIe driver, in a VM:
# QEMU's emulated NVMe controller bound to vfio-pci, the ferrox daemon attaching it
# ([[bdev]] kind = "nvme") and exporting its namespace over NVMe/TCP on 127.0.0.1:4420,
# the kernel initiator writing through it (fio verify, ext4), a clean daemon stop
# (CC.SHN), and the device given back to the kernel nvme driver, which must read the
# file system written through Ferrox (fsck.ext4 -fn, mount, sha256sum -c).
#
# From the host (build first):
#   cargo build --release -p ferrox
#   scripts/interop/vfio-export.sh
# Environment: FERROX_BIN (default target/release/ferrox), VFIO_OUT (host log dir,
# default target/interop/vfio-export; emptied), NVME_MB (256), VM_TIMEOUT (300),
# FERROX_POLL_MODE (adaptive).
# Prints PASS/FAIL lines; exits non-zero on the first failure.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
NVME_MB=${NVME_MB:-256}

# ---------------------------------------------------------------- host side
if [[ -z ${VM_GUEST:-} ]]; then
    bin=${FERROX_BIN:-}
    [[ -z $bin && -x $repo/target/release/ferrox ]] && bin=$repo/target/release/ferrox
    [[ -z $bin && -x ${CARGO_TARGET_DIR:-/nonexistent}/release/ferrox ]] && bin=$CARGO_TARGET_DIR/release/ferrox
    [[ -n $bin && -x $bin ]] || { echo "FAIL: build first: cargo build --release -p ferrox (or set FERROX_BIN)" >&2; exit 2; }
    bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")
    out=${VFIO_OUT:-$repo/target/interop/vfio-export}
    mkdir -p "$out"
    find "$out" -mindepth 1 -delete
    rc=0
    "$here/run-in-vm" --timeout "${VM_TIMEOUT:-300}" --cpus "${VM_CPUS:-2}" --nvme "$NVME_MB" \
        --share "$out" --env "FERROX_BIN=$bin" --env "NVME_MB=$NVME_MB" --env FERROX_POLL_MODE \
        -- "$here/${0##*/}" "$@" || rc=$?
    if (( rc != 0 )) && [[ -s $out/ferrox.log ]]; then
        echo "---- last 30 lines of $out/ferrox.log" >&2
        tail -n 30 "$out/ferrox.log" >&2
    fi
    echo "vfio-export: $( ((rc == 0)) && echo passed || echo "FAILED (exit $rc)" ); logs: $out" >&2
    exit "$rc"
fi

# ---------------------------------------------------------------- guest side
# shellcheck source=lib.sh
source "$here/lib.sh"
NQN=nqn.2026-11.io.ferrox:vfio
ADDR=127.0.0.1
PORT=4420
WORK=/tmp/ferrox-vfio
OUT=$INTEROP_OUT
CONFIG=$WORK/ferrox.toml
MNT=/mnt/ferrox-vfio
VERIFY=(--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0)
DEV=""
mkdir -p "$WORK" "$OUT" "$MNT"

cleanup() {
    local rc=$?
    set +e
    mountpoint -q "$MNT" && umount "$MNT"
    nvme disconnect -n "$NQN" >/dev/null 2>&1
    ferrox_stop 10 >/dev/null 2>&1
    return "$rc"
}
trap cleanup EXIT

step "find the emulated NVMe controller and its IOMMU group"
bdf=$(qemu_nvme_bdf) || fail find "no QEMU NVMe controller (boot with run-in-vm --nvme SIZE)"
[[ -e /sys/bus/pci/devices/$bdf/iommu_group ]] || fail find "$bdf has no IOMMU group"
pass "$bdf, IOMMU group $(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")"

cat > "$CONFIG" <<EOF
[reactor]
cores = [${FERROX_CORES:-1}]
poll_mode = "${FERROX_POLL_MODE:-adaptive}"

[pool]
hugepages = false

[[bdev]]
name = "nvme0"
kind = "nvme"
pci = "$bdf"

[[subsystem]]
nqn = "$NQN"
serial = "FERROXVFIO0001"
model = "Ferrox over VFIO"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "nvme0n1"

[[subsystem.listener]]
address = "$ADDR"
port = $PORT
EOF
cp "$CONFIG" "$OUT/ferrox.toml"
DAEMON_ARGS=(--data-dir "$WORK/data" --no-control)

step "the daemon refuses a device that is not on vfio-pci: exit 2 and the fixing command"
modprobe vfio-pci || fail modules "modprobe vfio-pci"
rc=0
msg=$("$(ferrox_bin)" --config "$CONFIG" "${DAEMON_ARGS[@]}" 2>&1 </dev/null) || rc=$?
(( rc == 2 )) || fail config-error "exit status $rc (want 2): $msg"
grep -q "not bound to vfio-pci" <<<"$msg" || fail config-error "unexpected message: $msg"
grep -q "hint: .*vfio-pci > /sys/bus/pci/devices/$bdf/driver_override" <<<"$msg" ||
    fail config-error "no fixing command in: $msg"
sed 's/^/    /' <<<"$msg"
pass "exit 2 with the driver's hint"

step "bind $bdf to vfio-pci and start ferrox on it"
pci_bind_vfio "$bdf" || fail bind "vfio-pci did not bind $bdf"
ferrox_start "$CONFIG" "$ADDR:$PORT" "${DAEMON_ARGS[@]}" || fail daemon "ferrox did not start (log: $FERROX_LOG)"
ferrox_log_wait "NVMe namespace attached.*nvme0n1" 5 || fail daemon "no 'NVMe namespace attached' line for nvme0n1"
pass "ferrox serves nvme0n1 (VFIO) as $NQN on $ADDR:$PORT"

step "kernel initiator: nvme connect"
modprobe nvme-tcp || fail modules "modprobe nvme-tcp"
out=$(nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" 2>&1) || fail connect "nvme connect: $out"
DEV=$(nvme_wait_dev "$NQN" 30) || fail connect "no namespace block device"
want=$(( NVME_MB << 20 ))
got=$(blockdev --getsize64 "$DEV")
(( got == want )) || fail connect "$DEV has $got bytes, the emulated drive $want"
pass "$DEV, $got bytes"

step "fio write + verify through Ferrox (crc32c)"
run_fio() {   # NAME [fio options...]
    local name=$1; shift
    fio --name="$name" --filename="$DEV" --direct=1 --ioengine=libaio --eta=never \
        --runtime=60 "$@" > "$OUT/fio-$name.log" 2>&1 || { tail -n 25 "$OUT/fio-$name.log" >&2; return 1; }
}
run_fio randwrite-4k --rw=randwrite --bs=4k --iodepth=16 --size=16M --offset=0 "${VERIFY[@]}" ||
    fail fio "randwrite 4k verify"
pass "fio randwrite 4k QD16 16 MiB, verify=crc32c"
run_fio randwrite-128k --rw=randwrite --bs=128k --iodepth=8 --size=32M --offset=16M "${VERIFY[@]}" ||
    fail fio "randwrite 128k verify"
pass "fio randwrite 128k QD8 32 MiB, verify=crc32c"

step "ext4 through Ferrox: mkfs, files, sha256, umount, fsck"
out=$(mkfs.ext4 -F -q "$DEV" 2>&1) || fail mkfs "mkfs.ext4: $out"
mount -t ext4 "$DEV" "$MNT" || fail ext4 "mount"
for d in 1 2 3; do
    mkdir -p "$MNT/dir$d"
    for f in 1 2 3 4 5; do
        head -c $(( (RANDOM * 32 + RANDOM) % (1 << 20) + 1 )) /dev/urandom > "$MNT/dir$d/file$f"
    done
done
head -c $(( 8 << 20 )) /dev/urandom > "$MNT/big"
(cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > "$WORK/sums"
sync
umount "$MNT" || fail ext4 "umount"
out=$(fsck.ext4 -fn "$DEV" 2>&1) || fail fsck "not clean (exit $?): $out"
pass "ext4: $(wc -l < "$WORK/sums") files written and summed, fsck.ext4 -fn clean"

step "disconnect, stop the daemon (CC.SHN)"
nvme disconnect -n "$NQN" >/dev/null || fail disconnect "nvme disconnect"
nvme_wait_gone "$NQN" 30 || fail disconnect "controller still present"
ferrox_stop 20
[[ $FERROX_EXIT == 0 && $FERROX_KILLED == 0 ]] || fail stop "ferrox exit status $FERROX_EXIT (killed: $FERROX_KILLED)"
ferrox_log_wait "NVMe controller shut down \\(CC.SHN\\) and handed back" 1 ||
    fail stop "no clean-shutdown line in the daemon log"
pass "ferrox exited 0 after shutting the controller down"

step "give $bdf back to the kernel nvme driver; it reads what Ferrox wrote"
blk=$(pci_bind_nvme "$bdf" 15) || fail handback "the kernel nvme driver did not take $bdf back"
pass "$bdf back on nvme as $blk"
out=$(fsck.ext4 -fn "$blk" 2>&1) || fail verify "fsck.ext4 -fn on $blk (exit $?): $out"
mount -o ro -t ext4 "$blk" "$MNT" || fail verify "mount $blk"
out=$(cd "$MNT" && sha256sum --quiet -c "$WORK/sums" 2>&1) || fail verify "checksums differ: $out"
umount "$MNT"
pass "kernel driver: fsck.ext4 -fn clean, sha256sum -c of $(wc -l < "$WORK/sums") files OK"

echo "PASS: vfio-export (kernel $(uname -r))"
