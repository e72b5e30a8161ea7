#!/usr/bin/env bash
# suite.sh — Ferrox kernel-interop suite: the Linux kernel's NVMe/TCP initiator (nvme-cli,
# fio, ext4, xfs) against the ferrox daemon over 127.0.0.1:4420, inside a throw-away VM.
#
# From the host:   scripts/interop/suite.sh [STEP...]      (boots a VM and runs itself in it)
# In a guest:      VM_GUEST=1 scripts/interop/suite.sh [STEP...]     (as root, nvme-tcp needed)
#
# Steps (default: all, in order; each prints PASS lines, the first failure exits 1):
#   1 admin      discover, connect, nvme list / id-ctrl / id-ns / smart-log /
#                get-feature 7 / error-log
#   2 fio        fio write+verify: randwrite, randrw, bs 512/4k/64k/128k, bsrange; trim
#   3 fs         ext4 and xfs: mkfs, file tree + sha256, fsck/xfs_repair -n, remount, verify
#   4 options    fio verify with --hdr-digest --data-digest, --nr-io-queues=1 and =2
#   5 restart    data written before a daemon restart (SIGTERM) reads back after it
#   6 kato       abrupt host loss (nft drops port 4420): the daemon tears the controller
#                down after KATO; a second host (other hostnqn) then connects and does I/O
#   7 perf       ferrox-perf --verify (Ferrox's host library) against kernel nvmet-tcp
#                and against Ferrox, with and without digests; ferrox-perf compare
#   8 volumes    ferroxctl: pool, thin volume with ext4, snapshot while fio writes,
#                clone published to a second NQN and mounted: files of the snapshot moment;
#                vol1 grown while mounted (the host sees the size, resize2fs online)
#   9 cluster    etcd and three nodes on 127.0.0.5-7 (mutual TLS): a volume created and
#                published through node b lands on node c; the kernel connects to c,
#                fio verify; unpublished and deleted through node a
#
# Environment (host side):
#   FERROX_BIN        daemon binary (default target/release/ferrox, else target/debug/ferrox)
#   FERROX_INTEROP_OUT  host directory for logs (default target/interop/suite; emptied)
#   VM_MEM VM_CPUS VM_TIMEOUT   VM size (default 3072 MiB, 2 vCPUs, 900 s)
#   FERROX_CORES (default "0, 1"), FERROX_POLL_MODE (default adaptive),
#   FERROX_LOG_LEVEL (default info), FIO_RUNTIME (cap per fio job, default 120 s)
#
# What the daemon must do for this suite (see also the report in the commit adding it):
#   * log (stderr) a line containing "listening on 127.0.0.1:4420" once it accepts
#     connections (plain text in the message, not only a structured field);
#   * exit with status 0 on SIGTERM (within 20 s), keeping file-backed bdev data;
#   * on keep-alive expiry log a line matching the case-insensitive ERE
#     'keep.?alive.*(timeout|timed out|expired)', e.g.
#     "controller 1: keep-alive timeout (kato 5000 ms), tearing down".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

# ---------------------------------------------------------------- host side
if [[ -z ${VM_GUEST:-} ]]; then
    bin=${FERROX_BIN:-}
    if [[ -z $bin ]]; then
        for b in "$repo/target/release/ferrox" "$repo/target/debug/ferrox"; do
            [[ -x $b ]] && { bin=$b; break; }
        done
    fi
    [[ -n $bin && -x $bin ]] || { echo "suite: no ferrox binary (cargo build, or set FERROX_BIN)" >&2; exit 2; }
    bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")
    out=${FERROX_INTEROP_OUT:-$repo/target/interop/suite}
    mkdir -p "$out"
    find "$out" -mindepth 1 -delete
    echo "suite: daemon $bin; logs in $out" >&2
    rc=0
    "$here/run-in-vm" --mem "${VM_MEM:-3072}" --cpus "${VM_CPUS:-2}" --timeout "${VM_TIMEOUT:-900}" \
        --share "$out" --dmesg "$out/dmesg.txt" \
        --env "FERROX_BIN=$bin" --env FERROX_CORES --env FERROX_POLL_MODE \
        --env FERROX_LOG_LEVEL --env FIO_RUNTIME \
        -- "$here/${0##*/}" "$@" || rc=$?
    if (( rc != 0 )); then
        if [[ -s $out/ferrox.log ]]; then
            echo "---- last 40 lines of $out/ferrox.log" >&2
            tail -n 40 "$out/ferrox.log" >&2
        fi
        echo "suite: FAILED (exit $rc); logs: $out" >&2
    else
        echo "suite: all steps passed; logs: $out" >&2
    fi
    exit "$rc"
fi

# ---------------------------------------------------------------- guest side
# shellcheck source=lib.sh
source "$here/lib.sh"

NQN=nqn.2026-11.io.ferrox:interop
# A second subsystem reachable only through its own listener (127.0.0.2).
SIDE_NQN=nqn.2026-11.io.ferrox:interop-side
SIDE_ADDR=127.0.0.2
SERIAL=FERROXINTEROP01
MODEL="Ferrox interop"
ADDR=127.0.0.1
PORT=4420
SIZE_MIB=512
BLOCK=512
KATO=5
FIO_RUNTIME=${FIO_RUNTIME:-120}
WORK=/tmp/ferrox-interop
OUT=$INTEROP_OUT
CONFIG=$WORK/ferrox.toml
MNT=/mnt/ferrox-interop
NFT_TABLE=ferrox_interop

hostnqn1=$(cat /etc/nvme/hostnqn 2>/dev/null || echo "nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)")
hostid1=$(cat /etc/nvme/hostid 2>/dev/null || cat /proc/sys/kernel/random/uuid)
DEV="" CTRL=""

mkdir -p "$WORK" "$OUT" "$MNT" /tmp/ferrox
# The guest's / (and /tmp) is an overlay on tmpfs, which on this kernel refuses O_DIRECT.
# The backing file lives on ext4 on a brd RAM disk instead, so the daemon may open it
# with O_DIRECT; brd keeps its data across daemon restarts.
if ! mountpoint -q /tmp/ferrox; then
    modprobe brd rd_nr=1 rd_size=$(( (SIZE_MIB + 128) * 1024 )) max_part=0 || fail setup "modprobe brd"
    wait_for 10 test -b /dev/ram0 || fail setup "/dev/ram0 did not appear"
    mkfs.ext4 -q -F /dev/ram0 || fail setup "mkfs.ext4 /dev/ram0"
    mount /dev/ram0 /tmp/ferrox || fail setup "mount /dev/ram0 /tmp/ferrox"
fi
rm -f /tmp/ferrox/disk0.img

cat > "$CONFIG" <<EOF
[reactor]
cores = [${FERROX_CORES:-0, 1}]
poll_mode = "${FERROX_POLL_MODE:-adaptive}"

[[bdev]]
name = "disk0"
kind = "uring"
path = "/tmp/ferrox/disk0.img"
size = "${SIZE_MIB}MiB"
block_size = $BLOCK

[[subsystem]]
nqn = "$NQN"
serial = "$SERIAL"
model = "$MODEL"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "disk0"

[[subsystem.listener]]
address = "$ADDR"
port = $PORT

[[bdev]]
name = "side0"
kind = "malloc"
size = "16MiB"

[[subsystem]]
nqn = "$SIDE_NQN"
serial = "FERROXSIDE01"
model = "Ferrox interop side"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
bdev = "side0"

[[subsystem.listener]]
address = "$SIDE_ADDR"
port = $PORT
EOF
cp "$CONFIG" "$OUT/ferrox.toml"

# Step 9's processes (etcd and three nodes), stopped by cluster_stop or on exit.
CL_PIDS=()
cluster_stop() {
    local p
    for p in "${CL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${CL_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    CL_PIDS=()
}
cleanup() {
    local rc=$?
    set +e
    cluster_stop
    mountpoint -q "$MNT" && umount "$MNT"
    nft delete table inet "$NFT_TABLE" 2>/dev/null
    nvme disconnect -n "$NQN" >/dev/null 2>&1
    ferrox_stop 10 >/dev/null 2>&1
    if (( rc != 0 )); then
        echo "---- suite failed (exit $rc); daemon log: $FERROX_LOG" >&2
        dmesg | grep -iE 'nvme|nvmet|blk_update|I/O error' | tail -n 30 > "$OUT/dmesg-nvme-tail.txt" 2>/dev/null
    fi
    return "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- helpers
daemon_up() {
    [[ -n $FERROX_PID ]] && kill -0 "$FERROX_PID" 2>/dev/null && return 0
    ferrox_start "$CONFIG" "$ADDR:$PORT" --data-dir "$WORK/data" || fail daemon "ferrox did not start (log: $FERROX_LOG)"
}

# connect [nvme connect options...]: sets DEV (/dev/nvmeXnY) and CTRL (nvmeX).
connect() {
    local out
    out=$(nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" "$@" 2>&1) ||
        fail connect "nvme connect $* exited $?: $out"
    DEV=$(nvme_wait_dev "$NQN" 30) || fail connect "no namespace block device after nvme connect $*"
    CTRL=$(nvme_ctrl_for_nqn "$NQN") || fail connect "no controller for $NQN"
}

connected() { [[ -n $CTRL && -e /sys/class/nvme/$CTRL ]] && nvme_ctrl_for_nqn "$NQN" >/dev/null; }

ensure_connected() {
    daemon_up
    connected || connect --hostnqn "$hostnqn1" --hostid "$hostid1"
}

disconnect() {
    nvme disconnect -n "$NQN" >/dev/null || fail disconnect "nvme disconnect -n $NQN exited $?"
    nvme_wait_gone "$NQN" 30 || fail disconnect "controller for $NQN still present 30 s after disconnect"
    DEV="" CTRL=""
}

# run_fio NAME [fio options...]: against $DEV, output in $OUT/fio-NAME.log.
run_fio() {
    local name=$1; shift
    local log=$OUT/fio-$name.log
    if ! fio --name="$name" --filename="$DEV" --direct=1 --ioengine=libaio --eta=never \
            --runtime="$FIO_RUNTIME" "$@" > "$log" 2>&1; then
        tail -n 25 "$log" >&2
        return 1
    fi
}
VERIFY=(--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0)

# id_field TEXT FIELD: the value of "FIELD : value" in nvme-cli's text output, trimmed.
id_field() { sed -n "s/^$2[[:space:]]*:[[:space:]]*//p" <<<"$1" | head -n1 | sed 's/[[:space:]]*$//'; }

# ---------------------------------------------------------------- step 1: admin
step1() {
    step "1: discovery, connect, admin commands"
    modprobe nvme-tcp || fail modprobe "modprobe nvme-tcp"
    daemon_up
    local disc out val
    disc=$(nvme discover -t tcp -a "$ADDR" -s "$PORT" 2>&1) || fail discover "nvme discover exited $?: $disc"
    echo "$disc" > "$OUT/discover.txt"
    grep -Eq "^subnqn: *$NQN\$" <<<"$disc" || fail discover "discovery log page does not list $NQN"
    grep -Eq "^trsvcid: *$PORT\$" <<<"$disc" || fail discover "discovery entry lacks trsvcid $PORT"
    pass "discover lists $NQN"
    # The side subsystem: listed with its own listener's address only; the kernel
    # cannot connect to it through $ADDR, and can through $SIDE_ADDR.
    val=$(grep -A8 -E "^subnqn: *$SIDE_NQN\$" <<<"$disc" | grep -E '^traddr:' || true)
    grep -Eq "^traddr: *$SIDE_ADDR\$" <<<"$val" || fail listeners "discovery does not list $SIDE_NQN at $SIDE_ADDR"
    (( $(grep -c "^traddr:" <<<"$val") == 1 )) || fail listeners "$SIDE_NQN listed at more than its listener: $val"
    if nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$SIDE_NQN" >/dev/null 2>&1; then
        nvme disconnect -n "$SIDE_NQN" >/dev/null 2>&1
        fail listeners "connected to $SIDE_NQN through $ADDR, which is not its listener"
    fi
    out=$(nvme connect -t tcp -a "$SIDE_ADDR" -s "$PORT" -n "$SIDE_NQN" 2>&1) || fail listeners "connect through $SIDE_ADDR: $out"
    nvme_wait_dev "$SIDE_NQN" 30 >/dev/null || fail listeners "no block device for $SIDE_NQN"
    nvme disconnect -n "$SIDE_NQN" >/dev/null || fail listeners "disconnect $SIDE_NQN"
    nvme_wait_gone "$SIDE_NQN" 30 || fail listeners "$SIDE_NQN still connected"
    pass "$SIDE_NQN: discovered at $SIDE_ADDR only; refused through $ADDR, connected through $SIDE_ADDR"

    connected && disconnect
    connect --hostnqn "$hostnqn1" --hostid "$hostid1"
    pass "connect: /dev/$CTRL, $DEV (transport $(cat "/sys/class/nvme/$CTRL/transport"))"

    out=$(nvme list 2>&1) || fail "nvme list" "exited $?: $out"
    grep -q "^$DEV " <<<"$out" || fail "nvme list" "does not show $DEV"
    grep -q "$SERIAL" <<<"$out" || fail "nvme list" "does not show serial $SERIAL"
    pass "nvme list"

    out=$(nvme id-ctrl "/dev/$CTRL" 2>&1) || fail id-ctrl "exited $?: $out"
    echo "$out" > "$OUT/id-ctrl.txt"
    val=$(id_field "$out" sn);     [[ $val == "$SERIAL" ]] || fail id-ctrl "sn is '$val', want '$SERIAL'"
    val=$(id_field "$out" mn);     [[ $val == "$MODEL" ]]  || fail id-ctrl "mn is '$val', want '$MODEL'"
    val=$(id_field "$out" subnqn); [[ $val == "$NQN" ]]    || fail id-ctrl "subnqn is '$val', want '$NQN'"
    pass "id-ctrl (sn '$SERIAL', mn '$MODEL', subnqn, fr '$(id_field "$out" fr)', mdts $(id_field "$out" mdts))"

    out=$(nvme id-ns "/dev/$CTRL" -n 1 2>&1) || fail id-ns "exited $?: $out"
    echo "$out" > "$OUT/id-ns.txt"
    val=$(id_field "$out" nsze)
    [[ $val =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || fail id-ns "no nsze in id-ns output"
    (( val == SIZE_MIB * 1024 * 1024 / BLOCK )) ||
        fail id-ns "nsze is '$val', want $(( SIZE_MIB * 1024 * 1024 / BLOCK )) blocks"
    grep -Eq "lbads:9 .*in use" <<<"$out" || fail id-ns "in-use LBA format is not 512-byte (lbads:9)"
    val=$(blockdev --getsize64 "$DEV")
    (( val == SIZE_MIB * 1024 * 1024 )) || fail id-ns "$DEV is $val bytes, want $(( SIZE_MIB << 20 ))"
    pass "id-ns (nsze $(( SIZE_MIB * 1024 * 1024 / BLOCK )) blocks of $BLOCK B, $DEV $val bytes)"

    out=$(nvme smart-log "/dev/$CTRL" 2>&1) || fail smart-log "exited $?: $out"
    echo "$out" > "$OUT/smart-log.txt"
    pass "smart-log (critical_warning $(id_field "$out" critical_warning))"

    out=$(nvme get-feature "/dev/$CTRL" -f 7 2>&1) || fail "get-feature 7" "exited $?: $out"
    val=$(grep -Eo 'value: *0x[0-9a-fA-F]+' <<<"$out" | grep -Eo '0x[0-9a-fA-F]+') ||
        fail "get-feature 7" "no value in: $out"
    pass "get-feature 7 (number of queues: $(( (val & 0xffff) + 1 )) SQ, $(( (val >> 16) + 1 )) CQ; host uses $(( $(cat "/sys/class/nvme/$CTRL/queue_count") - 1 )) I/O queues)"

    out=$(nvme error-log "/dev/$CTRL" 2>&1) || fail error-log "exited $?: $out"
    pass "error-log"
}

# ---------------------------------------------------------------- step 2: fio
step2() {
    step "2: fio write + verify on $DEV"
    ensure_connected
    run_fio randwrite-4k --rw=randwrite --bs=4k --iodepth=16 --size=32M --offset=0 "${VERIFY[@]}" ||
        fail fio-randwrite-4k "verify failed"
    pass "fio randwrite 4k QD16 32 MiB + verify"
    run_fio randrw-4k --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 --size=32M --offset=32M "${VERIFY[@]}" ||
        fail fio-randrw-4k "verify failed"
    pass "fio randrw 50/50 4k QD16 32 MiB + verify"
    local bs size off=64
    for bs in 512 4k 64k 128k; do
        size=32; [[ $bs == 512 ]] && size=4
        run_fio "randwrite-$bs" --rw=randwrite --bs="$bs" --iodepth=8 --size="${size}M" \
            --offset="${off}M" "${VERIFY[@]}" || fail "fio-randwrite-$bs" "verify failed"
        pass "fio randwrite bs=$bs QD8 $size MiB + verify"
        off=$(( off + 32 ))
    done
    # Sizes are multiples of 512 (--bs_unaligned would give byte sizes O_DIRECT rejects).
    run_fio bsrange --rw=randwrite --bsrange=512-128k --iodepth=8 --size=16M \
        --offset="${off}M" "${VERIFY[@]}" || fail fio-bsrange "verify failed"
    pass "fio randwrite bsrange=512-128k QD8 16 MiB + verify"
    off=$(( off + 32 ))

    # Trim: needs ONCS.DSM (the kernel then sets a non-zero discard limit).
    local qdev=${DEV#/dev/} dlfeat zeros=0
    (( $(cat "/sys/block/$qdev/queue/discard_max_bytes") > 0 )) ||
        fail fio-trim "$DEV has no discard support (Dataset Management not advertised in ONCS)"
    run_fio trim-prefill --rw=write --bs=128k --iodepth=4 --size=32M --offset="${off}M" \
        --buffer_compress_percentage=0 --refill_buffers || fail fio-trim "prefill failed"
    run_fio trim --rw=randtrim --bs=64k --iodepth=4 --size=32M --offset="${off}M" ||
        fail fio-trim "randtrim failed"
    dlfeat=$(id_field "$(nvme id-ns "/dev/$CTRL" -n 1)" dlfeat)
    [[ $dlfeat =~ ^[0-9]+$ ]] || dlfeat=0
    if (( (dlfeat & 7) == 1 )); then
        zeros=1
        cmp -n $(( 32 << 20 )) <(dd if="$DEV" bs=1M skip="$off" count=32 iflag=direct status=none) /dev/zero ||
            fail fio-trim "DLFEAT says deallocated blocks read as zeros, but the trimmed range does not"
    fi
    run_fio trim-rewrite --rw=randwrite --bs=64k --iodepth=4 --size=32M --offset="${off}M" "${VERIFY[@]}" ||
        fail fio-trim "write + verify after trim failed"
    if (( zeros )); then
        pass "fio randtrim 64k 32 MiB: reads back zeros (dlfeat $dlfeat); rewrite + verify"
    else
        pass "fio randtrim 64k 32 MiB; rewrite + verify (dlfeat $dlfeat: zeros not promised, not checked)"
    fi
}

# ---------------------------------------------------------------- step 3: file systems
make_tree() {   # DIR: 4 directories x 8 files of random size (1 B..1 MiB) plus one 8 MiB file
    local d f
    for d in 1 2 3 4; do
        mkdir -p "$1/dir$d/sub"
        for f in 1 2 3 4 5 6 7 8; do
            head -c $(( (RANDOM * 32 + RANDOM) % (1 << 20) + 1 )) /dev/urandom > "$1/dir$d/file$f"
        done
        head -c 4096 /dev/urandom > "$1/dir$d/sub/page"
    done
    head -c $(( 8 << 20 )) /dev/urandom > "$1/big"
}

fs_round() {   # ext4|xfs
    local fs=$1 sums=$WORK/sums-$1 out
    case $fs in
        ext4) out=$(mkfs.ext4 -F -q "$DEV" 2>&1) || fail "mkfs.ext4" "exited $?: $out" ;;
        xfs)  out=$(mkfs.xfs -f -q "$DEV" 2>&1) || fail "mkfs.xfs" "exited $?: $out" ;;
    esac
    mount -t "$fs" "$DEV" "$MNT" || fail "$fs" "mount failed"
    make_tree "$MNT"
    (cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) > "$sums"
    sync
    umount "$MNT" || fail "$fs" "umount failed"
    case $fs in
        ext4) out=$(fsck.ext4 -fn "$DEV" 2>&1) || fail "fsck.ext4" "not clean (exit $?): $out" ;;
        xfs)  out=$(xfs_repair -n "$DEV" 2>&1) || fail "xfs_repair" "not clean (exit $?): $out" ;;
    esac
    echo "$out" > "$OUT/fsck-$fs.txt"
    mount -t "$fs" "$DEV" "$MNT" || fail "$fs" "remount failed"
    out=$(cd "$MNT" && sha256sum --quiet -c "$sums" 2>&1) || fail "$fs" "checksums differ after remount: $out"
    umount "$MNT" || fail "$fs" "final umount failed"
    pass "$fs: mkfs, $(wc -l < "$sums") files, $([[ $fs == ext4 ]] && echo 'fsck.ext4 -fn' || echo 'xfs_repair -n') clean, remount, sha256sum -c"
}

step3() {
    step "3: file systems on $DEV"
    ensure_connected
    fs_round ext4
    fs_round xfs
}

# ---------------------------------------------------------------- step 4: connect options
step4() {
    step "4: connect options"
    daemon_up
    local variant tag args opts want qc
    for variant in "digests:--hdr-digest --data-digest" "q1:--nr-io-queues=1" "q2:--nr-io-queues=2"; do
        tag=${variant%%:*} args=${variant#*:}
        connected && disconnect
        read -r -a opts <<<"$args"
        connect --hostnqn "$hostnqn1" --hostid "$hostid1" "${opts[@]}"
        want=""
        [[ $args =~ nr-io-queues=([0-9]+) ]] && want=${BASH_REMATCH[1]}
        if [[ -n $want ]]; then
            qc=$(( $(cat "/sys/class/nvme/$CTRL/queue_count") - 1 ))
            (( qc == want )) || fail "connect $args" "host has $qc I/O queues, want $want"
        fi
        run_fio "opt-$tag-4k" --rw=randwrite --bs=4k --iodepth=16 --size=16M "${VERIFY[@]}" ||
            fail "fio $args" "4k verify failed"
        run_fio "opt-$tag-128k" --rw=write --bs=128k --iodepth=4 --size=16M --offset=16M "${VERIFY[@]}" ||
            fail "fio $args" "128k verify failed"
        pass "connect $args: fio randwrite 4k + write 128k, verified"
        disconnect
    done
}

# ---------------------------------------------------------------- step 5: restart
step5() {
    step "5: daemon restart keeps data"
    ensure_connected
    local persist=(--rw=write --bs=128k --iodepth=4 --offset=400M --size=32M --verify=crc32c --verify_fatal=1)
    local sum1 sum2
    run_fio persist-write "${persist[@]}" --do_verify=1 || fail restart "writing the region failed"
    sum1=$(dd if="$DEV" bs=1M skip=400 count=32 iflag=direct status=none | sha256sum | cut -d' ' -f1)
    disconnect
    ferrox_stop 20
    [[ $FERROX_KILLED == 0 ]] || fail restart "daemon ignored SIGTERM for 20 s (SIGKILLed)"
    [[ $FERROX_EXIT == 0 ]] || fail restart "daemon exited with status $FERROX_EXIT on SIGTERM, want 0"
    pass "daemon stopped cleanly on SIGTERM (exit 0)"
    daemon_up
    connect --hostnqn "$hostnqn1" --hostid "$hostid1"
    run_fio persist-verify "${persist[@]}" --verify_only || fail restart "fio --verify_only after restart failed"
    sum2=$(dd if="$DEV" bs=1M skip=400 count=32 iflag=direct status=none | sha256sum | cut -d' ' -f1)
    [[ $sum1 == "$sum2" ]] || fail restart "sha256 of the region changed across the restart"
    pass "after restart: fio --verify_only and sha256 of 32 MiB written before it match"
}

# ---------------------------------------------------------------- step 6: KATO
nft_block() {
    nft -f - <<EOF
table inet $NFT_TABLE {
    chain out {
        type filter hook output priority 0; policy accept;
        tcp dport $PORT drop
        tcp sport $PORT drop
    }
}
EOF
}

step6() {
    step "6: abrupt host loss, keep-alive timeout, second host"
    command -v nft >/dev/null || fail kato "nft not found (install nftables: scripts/install-test-deps.sh)"
    daemon_up
    connected && disconnect
    local from t0 t1 ctrl1 hostnqn2 hostid2 budget=$(( KATO * 4 + 30 ))
    # ctrl-loss-tmo 2 s: the host gives its controller up by itself soon after it notices
    # the loss (nvme-tcp connects with TCP_SYNCNT 1, so reconnect attempts fail fast).
    connect --hostnqn "$hostnqn1" --hostid "$hostid1" --keep-alive-tmo="$KATO" \
        --reconnect-delay=1 --ctrl-loss-tmo=2
    ctrl1=$CTRL
    dd if="$DEV" of=/dev/null bs=64k count=16 iflag=direct status=none || fail kato "read before the loss failed"
    from=$(ferrox_log_lines)
    nft_block || fail kato "cannot install the nft rule dropping tcp port $PORT"
    t0=$(date +%s)
    pass "host 1 ($ctrl1, kato ${KATO}s) cut off: all tcp port $PORT packets dropped"
    ferrox_log_wait 'keep.?alive.*(timeout|timed out|expired)' "$budget" "$from" ||
        fail kato "no keep-alive timeout in the daemon log within ${budget}s of the loss"
    t1=$(date +%s)
    (( t1 - t0 >= KATO / 2 )) || fail kato "controller torn down $(( t1 - t0 ))s after the loss, sooner than KATO allows"
    kill -0 "$FERROX_PID" 2>/dev/null || fail kato "the daemon died"
    pass "daemon tore the controller down $(( t1 - t0 ))s after the loss (KATO ${KATO}s): $(_ferrox_log_plain | tail -n +"$(( from + 1 ))" | grep -Eim1 'keep.?alive.*(timeout|timed out|expired)')"
    # Keep host 1 cut off until it gives its controller up (ctrl-loss-tmo), so it cannot
    # reconnect once the port is open again; disconnect it if it takes too long.
    if ! nvme_wait_gone "$NQN" 60; then
        nvme disconnect -d "/dev/$ctrl1" >/dev/null 2>&1 || true
        nvme_wait_gone "$NQN" 30 || fail kato "host 1's controller $ctrl1 does not go away"
    fi
    DEV="" CTRL=""
    nft delete table inet "$NFT_TABLE" || fail kato "cannot remove the nft rule"

    hostid2=$(cat /proc/sys/kernel/random/uuid)
    hostnqn2=nqn.2014-08.org.nvmexpress:uuid:$hostid2
    connect --hostnqn "$hostnqn2" --hostid "$hostid2"
    [[ $(cat "/sys/class/nvme/$CTRL/hostnqn") == "$hostnqn2" ]] || fail kato "second connection does not use host 2's NQN"
    run_fio kato-host2 --rw=randwrite --bs=4k --iodepth=16 --size=8M "${VERIFY[@]}" ||
        fail kato "host 2 I/O verify failed"
    pass "host 2 ($hostnqn2) connected and verified 8 MiB"
    disconnect
}

# 7: Ferrox's own host library (ferrox-perf --verify) against a peer nobody here wrote,
# the kernel's nvmet-tcp target (a file namespace on the ext4 RAM disk, port 4421),
# and against Ferrox itself.
step7() {
    step "7 perf: ferrox-perf --verify against kernel nvmet-tcp and against Ferrox"
    local perf k_nqn=nqn.2026-11.io.ferrox:interop-kernel k_port=4421 sub port img
    perf="$(dirname "$(ferrox_bin)")/ferrox-perf"
    [[ -x $perf ]] || fail perf "no ferrox-perf next to $(ferrox_bin) (cargo build --release --bin ferrox-perf)"
    modprobe nvmet && modprobe nvmet-tcp || fail perf "cannot load nvmet/nvmet-tcp"
    img=/tmp/ferrox/nvmet.img
    truncate -s 64M "$img" || fail perf "cannot create $img"
    sub=$NVMET_CFS/subsystems/$k_nqn port=$NVMET_CFS/ports/7
    mkdir -p "$sub/namespaces/1" "$port" || fail perf "configfs"
    echo 1 > "$sub/attr_allow_any_host"
    echo -n "$img" > "$sub/namespaces/1/device_path"
    echo 1 > "$sub/namespaces/1/enable" || fail perf "cannot enable the nvmet file namespace"
    echo tcp > "$port/addr_trtype"; echo ipv4 > "$port/addr_adrfam"
    echo "$ADDR" > "$port/addr_traddr"; echo "$k_port" > "$port/addr_trsvcid"
    ln -s "$sub" "$port/subsystems/$k_nqn" || fail perf "cannot expose $k_nqn on port $k_port"
    # ferrox-perf polls on vCPU 0; the daemon's reactors on the same vCPU would take
    # turns with it (and lose), so for this step the daemon runs on vCPU 1 only. The
    # kernel target has both vCPUs (softirq and kworkers go where the work is).
    ferrox_stop 20
    ferrox_start "$CONFIG" "$ADDR:$PORT" --data-dir "$WORK/data" --cores 1 ||
        fail perf "ferrox did not start on vCPU 1 (log: $FERROX_LOG)"
    local target name args
    for target in "nvme+tcp://$ADDR:$k_port/$k_nqn kernel-nvmet" "nvme+tcp://$ADDR:$PORT/$NQN ferrox"; do
        name=${target#* } target=${target% *}
        for args in "--rw randrw --bs 4k --qd 16" "--rw randwrite --bs 128k --qd 4" "--rw randrw --bs 64k --qd 8 --header-digest --data-digest"; do
            # shellcheck disable=SC2086  # word splitting of $args is intended
            "$perf" "$target" $args --range 32MiB --time 3 --verify --cores 0 > "$OUT/perf-$name.txt" 2>&1 ||
                fail perf "ferrox-perf --verify $args against $name failed: $(tail -n 3 "$OUT/perf-$name.txt")"
            pass "ferrox-perf $args --verify against $name: $(grep -E '^total' "$OUT/perf-$name.txt" | awk '{print $2 " IOPS"}')"
        done
    done
    # The project's way of reporting performance: A B A B, ratios pair by pair.
    "$perf" compare "nvme+tcp://$ADDR:$PORT/$NQN" "nvme+tcp://$ADDR:$k_port/$k_nqn" --rounds 2 \
        --rw randread --bs 4k --qd 16 --range 32MiB --time 3 --cores 0 > "$OUT/perf-compare.txt" 2>&1 ||
        fail perf "ferrox-perf compare failed: $(tail -n 3 "$OUT/perf-compare.txt")"
    grep -q '^iops ' "$OUT/perf-compare.txt" || fail perf "ferrox-perf compare printed no iops row"
    pass "ferrox-perf compare ferrox (1 vCPU) vs kernel-nvmet (2 vCPUs) (randread 4k QD16, A/B): $(grep '^iops ' "$OUT/perf-compare.txt" | awk '{print "IOPS ratio median", $(NF-2)}')"
    rm -f "$port/subsystems/$k_nqn"; rmdir "$sub/namespaces/1" "$sub" "$port" 2>/dev/null || true
    ferrox_stop 20
    daemon_up
}

# 8: logical volumes through the control plane: a thin volume with a file system, a
# snapshot taken while fio writes (the file system frozen around it), a clone of the
# snapshot published to a second NQN and mounted: it holds exactly the files of the
# snapshot moment.
step8() {
    step "8 volumes: ferroxctl thin volume, snapshot during fio, clone mounted"
    local ctl sock v1 v2 d1 d2 fio_pid rc m2=/mnt/ferrox-clone
    ctl="$(dirname "$(ferrox_bin)")/ferroxctl"
    [[ -x $ctl ]] || fail volumes "no ferroxctl next to $(ferrox_bin)"
    sock=$WORK/data/ferrox.sock
    daemon_up
    c() { "$ctl" --socket "$sock" "$@" >> "$OUT/ferroxctl.log" 2>&1 || fail volumes "ferroxctl $* failed: $(tail -n 2 "$OUT/ferroxctl.log")"; }
    c pool create pool0 --path /tmp/ferrox/pool0.img --size 256MiB
    c volume create vol1 --size 128MiB --thin
    c volume publish vol1 --any-host
    v1=nqn.2026-11.io.ferrox:volume:vol1 v2=nqn.2026-11.io.ferrox:volume:vol2
    nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$v1" >/dev/null || fail volumes "connect $v1"
    d1=$(nvme_wait_dev "$v1" 30) || fail volumes "no block device for $v1"
    pass "thin volume vol1 published and connected as $d1"
    mkfs.ext4 -q -F "$d1" || fail volumes "mkfs.ext4 on the thin volume"
    mount "$d1" "$MNT" || fail volumes "mount vol1"
    mkdir -p "$MNT/before"
    for i in $(seq 1 12); do head -c $(( i * 37 * 1024 )) /dev/urandom > "$MNT/before/f$i"; done
    (cd "$MNT" && sha256sum before/* > "$WORK/before.sha256")
    fio --name=bg --filename="$MNT/fio.dat" --size=16M --rw=randwrite --bs=4k --iodepth=8 \
        --ioengine=libaio --direct=1 --time_based --runtime=20 --eta=never --output="$OUT/fio-bg.log" &
    fio_pid=$!
    wait_for 30 test -s "$MNT/fio.dat" || fail volumes "fio did not start writing"
    fsfreeze -f "$MNT" || fail volumes "fsfreeze"
    "$ctl" --socket "$sock" snapshot create vol1 snap1 >> "$OUT/ferroxctl.log" 2>&1; rc=$?
    fsfreeze -u "$MNT"
    (( rc == 0 )) || fail volumes "snapshot create failed: $(tail -n 2 "$OUT/ferroxctl.log")"
    pass "snapshot snap1 taken while fio wrote to vol1"
    mkdir -p "$MNT/after" && head -c 100000 /dev/urandom > "$MNT/after/late" && sync
    wait "$fio_pid" || fail volumes "background fio failed (log: $OUT/fio-bg.log)"
    c snapshot clone snap1 vol2
    c volume publish vol2 --any-host
    nvme connect -t tcp -a "$ADDR" -s "$PORT" -n "$v2" >/dev/null || fail volumes "connect $v2"
    d2=$(nvme_wait_dev "$v2" 30) || fail volumes "no block device for $v2"
    mkdir -p "$m2"
    mount "$d2" "$m2" || fail volumes "mount the clone"
    (cd "$m2" && sha256sum -c --quiet "$WORK/before.sha256") || fail volumes "the clone's files differ from the snapshot moment"
    [[ ! -e $m2/after ]] || fail volumes "the clone holds files written after the snapshot"
    [[ -e $MNT/after/late ]] || fail volumes "vol1 lost a file written after the snapshot"
    pass "clone vol2 mounted from $d2: 12 files match the snapshot, nothing from after it"
    # Online growth: the namespace-attribute-changed event makes the kernel re-read the
    # size; ext4 then grows while mounted.
    c volume resize vol1 --size 192MiB
    grown() { [[ $(blockdev --getsize64 "$d1") == $(( 192 << 20 )) ]]; }
    wait_for 30 grown || fail volumes "the host still sees $(blockdev --getsize64 "$d1") bytes on $d1 after vol1 grew to 192 MiB"
    resize2fs "$d1" > "$OUT/resize2fs.log" 2>&1 || fail volumes "online resize2fs (log: $OUT/resize2fs.log)"
    local fs_bytes
    fs_bytes=$(df -B1 --output=size "$MNT" | tail -n 1)
    (( fs_bytes > 160 << 20 )) || fail volumes "ext4 on vol1 is $fs_bytes bytes after resize2fs"
    head -c $(( 4 << 20 )) /dev/urandom > "$MNT/after/grown" && sync || fail volumes "write after the growth"
    (cd "$MNT" && sha256sum after/grown > "$WORK/grown.sha256")
    pass "vol1 grew to 192 MiB while mounted: the host saw the new size (AER), ext4 grew online to $(( fs_bytes >> 20 )) MiB"
    umount "$m2" && umount "$MNT" || fail volumes "umount"
    fsck.ext4 -fn "$d2" > "$OUT/fsck-clone.log" 2>&1 || fail volumes "fsck of the clone (log: $OUT/fsck-clone.log)"
    fsck.ext4 -fn "$d1" > "$OUT/fsck-vol1.log" 2>&1 || fail volumes "fsck of the grown vol1 (log: $OUT/fsck-vol1.log)"
    mount -o ro "$d1" "$MNT" || fail volumes "remount vol1"
    (cd "$MNT" && sha256sum -c --quiet "$WORK/grown.sha256") || fail volumes "the file written after the growth differs"
    umount "$MNT" || fail volumes "umount"
    nvme disconnect -n "$v2" >/dev/null; nvme disconnect -n "$v1" >/dev/null
    nvme_wait_gone "$v1" 30 && nvme_wait_gone "$v2" 30 || fail volumes "controllers still present after disconnect"
    c volume unpublish vol2
    c volume unpublish vol1
    pass "both file systems clean (fsck), both volumes unpublished"
}

# Three cluster nodes (each its own daemon, data dir and control socket) on 127.0.0.5-7
# over one etcd member, mutual TLS between nodes (a CA and one node certificate made
# with openssl). The single-node daemon of steps 1-8 is stopped first. The pools are
# files on the guest's tmpfs (buffered I/O: tmpfs refuses O_DIRECT), not on the brd
# disk the earlier steps fill.
CL=/tmp/ferrox-cluster
cluster_pki() {   # DIR: ca.pem, node.pem, node.key (server and client, SANs 127.0.0.5-7)
    local d=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=ferrox interop CA" -keyout "$d/ca.key" -out "$d/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        >> "$OUT/cluster-pki.log" 2>&1 || return 1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ferrox node" \
        -keyout "$d/node.key" -out "$d/node.csr" >> "$OUT/cluster-pki.log" 2>&1 || return 1
    printf '%s\n' "subjectAltName=IP:127.0.0.5,IP:127.0.0.6,IP:127.0.0.7" \
        "extendedKeyUsage=serverAuth,clientAuth" "basicConstraints=CA:FALSE" > "$d/node.ext"
    openssl x509 -req -in "$d/node.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/node.ext" -out "$d/node.pem" >> "$OUT/cluster-pki.log" 2>&1
}
cluster_node() {   # NAME IP LABELS CORE
    local name=$1 ip=$2 out=$OUT/cluster-$1
    mkdir -p "$CL/$name"
    NO_COLOR=1 "$(ferrox_bin)" --cores "$4" --default-size 16MiB --log info \
        --listen "$ip:4420" --control-tcp "$ip:7420" \
        --tls-cert "$CL/node.pem" --tls-key "$CL/node.key" --tls-client-ca "$CL/ca.pem" \
        --node-name "$name" --labels "$3" --cluster "http://127.0.0.1:23790" \
        --data-dir "$CL/$name" > "$out.stdout" 2> "$out.log" < /dev/null &
    CL_PIDS+=($!)
    wait_for 60 grep -q "ferrox: ready" "$out.stdout" || fail cluster "node $name not ready (log: $out.log)"
}
step9() {
    step "9 cluster: a volume created through node b, placed on c, used by the kernel through c"
    local ctl v=nqn.2026-11.io.ferrox:volume:cvol d got
    ctl="$(dirname "$(ferrox_bin)")/ferroxctl"
    [[ -x $ctl ]] || fail cluster "no ferroxctl next to $(ferrox_bin)"
    command -v etcd >/dev/null || fail cluster "no etcd binary (scripts/install-test-deps.sh installs etcd-server)"
    connected && disconnect
    ferrox_stop 20
    rm -rf "$CL" && mkdir -p "$CL"
    cluster_pki "$CL" || fail cluster "openssl could not make the node certificates (log: $OUT/cluster-pki.log)"
    etcd --name e0 --data-dir "$CL/etcd" --listen-client-urls http://127.0.0.1:23790 \
        --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
        --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster e0=http://127.0.0.1:23800 \
        > "$OUT/etcd.log" 2>&1 < /dev/null &
    CL_PIDS+=($!)
    cluster_node a 127.0.0.5 zone=z1 0
    cluster_node b 127.0.0.6 zone=z2 1
    cluster_node c 127.0.0.7 zone=z3 0
    c() { local n=$1; shift; "$ctl" --socket "$CL/$n/ferrox.sock" "$@" 2>> "$OUT/ferroxctl.log" | tee -a "$OUT/ferroxctl.log"; }
    local n
    for n in a b c; do
        c "$n" pool create "p$n" --path "$CL/p$n.img" --size 128MiB > /dev/null \
            || fail cluster "pool create on $n: $(tail -n 2 "$OUT/ferroxctl.log")"
    done
    up3() { [[ $(c a node list | grep -cw up) == 3 ]]; }
    wait_for 20 up3 || fail cluster "node list through a does not show three nodes up: $(c a node list)"
    pass "three nodes up in etcd, each with a pool"
    # Through b: a volume in c's pool, then published (both carried out on c).
    c b volume create cvol --size 64MiB --thin --pool pc > /dev/null \
        || fail cluster "volume create through b: $(tail -n 2 "$OUT/ferroxctl.log")"
    got=$(c a volume get cvol) || fail cluster "volume get through a"
    [[ $(awk 'NR == 2 { print $1, $2 }' <<<"$got") == "cvol pc" ]] || fail cluster "volume get through a does not show cvol in pool pc: $got"
    got=$(c b volume publish cvol --any-host) || fail cluster "volume publish through b: $(tail -n 2 "$OUT/ferroxctl.log")"
    grep -q -- "-a 127.0.0.7 -s 4420" <<<"$got" || fail cluster "the publish answer does not name node c (127.0.0.7:4420): $got"
    pass "cvol created and published through b, lives in c's pool pc (volume get through a) and is served by c"
    nvme connect -t tcp -a 127.0.0.7 -s 4420 -n "$v" >/dev/null || fail cluster "nvme connect to c"
    d=$(nvme_wait_dev "$v" 30) || fail cluster "no block device for $v"
    fio --name=cluster --filename="$d" --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
        --direct=1 --size=32M --verify=crc32c --do_verify=1 --eta=never \
        --output="$OUT/fio-cluster.log" || fail cluster "fio verify on $d (log: $OUT/fio-cluster.log)"
    nvme disconnect -n "$v" >/dev/null
    nvme_wait_gone "$v" 30 || fail cluster "controller still present after disconnect"
    pass "kernel initiator through c: 32 MiB written and verified (crc32c) on $d"
    c a volume unpublish cvol > /dev/null || fail cluster "unpublish through a"
    c a volume delete cvol > /dev/null || fail cluster "delete through a"
    [[ $(c c volume list) != *cvol* ]] || fail cluster "cvol still listed on c after delete through a"
    cluster_stop
    pass "cvol unpublished and deleted through a; nodes and etcd stopped"
}

# ---------------------------------------------------------------- main
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(1 2 3 4 5 6 7 8 9)
modprobe nvme-tcp || fail modprobe "modprobe nvme-tcp"
echo "ferrox: $(ferrox_bin || echo 'NOT FOUND'); config $CONFIG; logs in $OUT"
start=$(date +%s)
for s in "${steps[@]}"; do
    case $s in
        1|admin) step1 ;;  2|fio) step2 ;;  3|fs) step3 ;;
        4|options) step4 ;;  5|restart) step5 ;;  6|kato) step6 ;;
        7|perf) step7 ;;  8|volumes) step8 ;;  9|cluster) step9 ;;
        *) fail suite "unknown step '$s' (1-9)" ;;
    esac
done
connected && disconnect
ferrox_stop 20
echo "PASS: interop suite (steps ${steps[*]}; $(( $(date +%s) - start ))s; kernel $(uname -r), $(nproc) vCPU)"
