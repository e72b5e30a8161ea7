#!/usr/bin/env bash
# kernel-selftest.sh — proves the interop VM runner works, without Ferrox: boots the guest,
# loads nvme-tcp and nvmet-tcp, exports a brd RAM disk through the kernel's nvmet-tcp
# target on 127.0.0.1:4420, connects the kernel initiator, runs a small fio write+verify,
# disconnects and tears down.  Prints PASS/FAIL per step; about 30 s under TCG.
#
# From the host:    scripts/interop/kernel-selftest.sh      (boots a VM, runs itself inside)
# Inside a guest:   VM_GUEST=1 scripts/interop/kernel-selftest.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
if [[ -z ${VM_GUEST:-} ]]; then
    exec "$here/run-in-vm" --timeout "${VM_TIMEOUT:-180}" -- "$here/${0##*/}" "$@"
fi
# shellcheck source=lib.sh
source "$here/lib.sh"

NQN=nqn.2026-11.io.ferrox:kernel-selftest
ADDR=127.0.0.1
PORT=4420
SIZE_MB=64
trap nvmet_teardown EXIT

step "modules"
modprobe nvme-tcp || fail modules "modprobe nvme-tcp"
modprobe nvmet-tcp || fail modules "modprobe nvmet-tcp"
pass "modprobe nvme-tcp nvmet-tcp"

step "kernel nvmet-tcp target on brd"
nvmet_setup "$NQN" "$ADDR" "$PORT" "$SIZE_MB" || fail nvmet "configfs setup"
pass "nvmet target"

step "discover + connect"
disc=$(nvme discover -t tcp -a "$ADDR" -s "$PORT") || fail discover "nvme discover exited $?"
grep -q "subnqn: *$NQN\$" <<<"$disc" || fail discover "discovery log does not list $NQN"
nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" >/dev/null || fail connect "nvme connect exited $?"
dev=$(nvme_wait_dev "$NQN" 30) || fail connect "no namespace block device for $NQN"
size=$(blockdev --getsize64 "$dev")
(( size == SIZE_MB * 1024 * 1024 )) || fail connect "$dev is $size bytes, expected $(( SIZE_MB << 20 ))"
pass "connect ($dev, $size bytes)"

step "fio 8 MiB 4k randwrite QD16 + crc32c verify"
fio --name=selftest --filename="$dev" --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
    --iodepth=16 --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --runtime=60 --eta=never --output-format=terse >/dev/null || fail fio "fio verify exited $?"
pass "fio verify"

step "disconnect + teardown"
out=$(nvme disconnect -n "$NQN") || fail disconnect "nvme disconnect exited $?"
grep -q 'disconnected 1 controller' <<<"$out" || fail disconnect "unexpected output: $out"
nvme_wait_gone "$NQN" 15 || fail disconnect "controller still present"
nvmet_teardown
[[ ! -e $NVMET_CFS/subsystems/$NQN ]] || fail teardown "subsystem still in configfs"
pass "disconnect + teardown"

echo "PASS: kernel-selftest (kernel $(uname -r), $(nproc) vCPU)"
