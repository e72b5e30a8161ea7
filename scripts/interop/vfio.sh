#!/usr/bin/env bash
# vfio.sh — Ferrox's user-space NVMe PCIe driver on QEMU's emulated NVMe controller:
# bind the device to vfio-pci, attach it through VFIO with the Rust driver
# (nvme/examples/vfio_verify.rs: bring-up, 128 KiB writes with PRP lists, read-verify,
# polled 4 KiB latency, CC.SHN shutdown), give it back to the kernel nvme driver and check
# with dd/cmp that the kernel reads exactly what the user-space driver wrote.
#
# From the host (build first):
#   cargo build --release -p ferrox-nvme --example vfio_verify
#   scripts/interop/vfio.sh
# Environment: VFIO_VERIFY_BIN (default target/release/examples/vfio_verify, else
# $CARGO_TARGET_DIR/release/examples/vfio_verify), NVME_MB (256), VERIFY_MB (4).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
NVME_MB=${NVME_MB:-256}
if [[ -z ${VM_GUEST:-} ]]; then
    bin=${VFIO_VERIFY_BIN:-}
    for b in "$here/../../target/release/examples/vfio_verify" "${CARGO_TARGET_DIR:-/nonexistent}/release/examples/vfio_verify"; do
        [[ -z $bin && -x $b ]] && bin=$(cd "$(dirname "$b")" && pwd -P)/vfio_verify
    done
    [[ -n $bin && -x $bin ]] || { echo "FAIL: build first: cargo build --release -p ferrox-nvme --example vfio_verify" >&2; exit 1; }
    exec "$here/run-in-vm" --timeout "${VM_TIMEOUT:-300}" --nvme "$NVME_MB" \
        --env "NVME_MB=$NVME_MB" --env "VFIO_VERIFY_BIN=$bin" --env VERIFY_MB \
        -- "$here/${0##*/}" "$@"
fi
# shellcheck source=lib.sh
source "$here/lib.sh"
VERIFY_MB=${VERIFY_MB:-4}
out=${INTEROP_OUT:-/tmp/ferrox-interop/out}
mkdir -p "$out"

step "find the emulated NVMe controller (QEMU 1b36:0010)"
bdf=""
for d in /sys/bus/pci/devices/*; do
    [[ $(cat "$d/vendor") == 0x1b36 && $(cat "$d/device") == 0x0010 ]] && { bdf=${d##*/}; break; }
done
[[ -n $bdf ]] || fail find "no QEMU NVMe controller (boot with run-in-vm --nvme SIZE)"
dev=/sys/bus/pci/devices/$bdf
[[ -e $dev/iommu_group ]] || fail find "$bdf has no IOMMU group"
group=$(basename "$(readlink "$dev/iommu_group")")
pass "$bdf, IOMMU group $group"

step "the driver explains what is missing while the device is not on vfio-pci"
modprobe vfio-pci || fail modules "modprobe vfio-pci"
if msg=$("$VFIO_VERIFY_BIN" "$bdf" "$out/expect.bin" 2>&1); then
    fail hint "attached a device that is not bound to vfio-pci"
fi
echo "$msg" | grep -q "not bound to vfio-pci" || fail hint "unexpected message: $msg"
echo "$msg" | grep -q "hint: .*vfio-pci > $dev/driver_override" || fail hint "no fixing command in: $msg"
echo "$msg" | sed 's/^/    /'
pass "clear error with a one-line hint"

step "bind to vfio-pci (driver_override)"
[[ -e $dev/driver ]] && echo "$bdf" > "$dev/driver/unbind"
echo vfio-pci > "$dev/driver_override"
echo "$bdf" > /sys/bus/pci/drivers_probe
[[ $(basename "$(readlink "$dev/driver")") == vfio-pci ]] || fail bind "vfio-pci did not bind $bdf"
pass "$bdf on vfio-pci"

step "user-space driver: attach over VFIO, write, read-verify, shut down"
"$VFIO_VERIFY_BIN" "$bdf" "$out/expect.bin" "$VERIFY_MB" || fail driver "vfio_verify"

step "give the device back to the kernel nvme driver"
echo "$bdf" > "$dev/driver/unbind"
echo > "$dev/driver_override"
modprobe nvme || fail modules "modprobe nvme"
echo "$bdf" > /sys/bus/pci/drivers_probe
wait_for 15 test -e "$dev/driver" || fail handback "nvme did not re-bind $bdf"
[[ $(basename "$(readlink "$dev/driver")") == nvme ]] || fail handback "re-bound to the wrong driver"
first_nvme_blk() { ls /sys/block | grep -E -m1 '^nvme[0-9]+n[0-9]+$'; }
wait_for 15 first_nvme_blk >/dev/null || fail handback "no namespace block device"
blk=/dev/$(first_nvme_blk)
pass "$bdf back on nvme as $blk"

step "the kernel reads what the user-space driver wrote"
dd if="$blk" of="$out/got.bin" bs=1M count="$VERIFY_MB" iflag=direct status=none || fail verify "dd"
cmp "$out/expect.bin" "$out/got.bin" || fail verify "data differs"
pass "dd + cmp: $VERIFY_MB MiB identical"

echo "PASS: vfio (kernel $(uname -r))"
