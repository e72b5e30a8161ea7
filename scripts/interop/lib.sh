# shellcheck shell=bash
# lib.sh — helpers for Ferrox's interop scripts; sourced by scripts that run INSIDE the VM
# (or on any root shell with nvme-tcp available).  Every wait here is a bounded poll on a
# condition, never a sleep used as synchronisation.
#
# Reporting
#   step TEXT                      print a "---- TEXT" section header
#   pass NAME                      print "PASS: NAME"
#   fail NAME REASON               print "FAIL: NAME: REASON" (stderr) and exit 1
#   wait_for TIMEOUT_S CMD...      run CMD every 0.1 s until it succeeds; 1 after TIMEOUT_S
#
# Ferrox daemon
#   ferrox_bin                     print the daemon binary ($FERROX_BIN, else
#                                  target/release/ferrox, else target/debug/ferrox)
#   ferrox_start CONFIG [ADDR:PORT] [ARGS...]
#                                  start it in the background; wait until its log says
#                                  "listening on ADDR:PORT" (default 127.0.0.1:4420), or
#                                  its stdout has "nvme connect -t tcp -a ADDR -s PORT".
#                                  Sets FERROX_PID; stderr -> $FERROX_LOG, stdout ->
#                                  $FERROX_STDOUT (appended across restarts)
#   ferrox_stop [TIMEOUT_S]        SIGTERM, bounded wait, then SIGKILL; sets
#                                  FERROX_EXIT (exit status, 128+N for signal N) and
#                                  FERROX_KILLED=1 when SIGKILL was needed
#   ferrox_log_wait REGEX TIMEOUT_S [FROM_LINE]
#                                  wait until the daemon log (after line FROM_LINE) has an
#                                  extended-regex match, case-insensitive
#   ferrox_log_lines               print the current number of lines in the daemon log
#
# NVMe host side (kernel initiator)
#   nvme_ctrl_for_nqn NQN [HOSTNQN]   print nvmeX of a connected controller
#   nvme_wait_dev NQN [TIMEOUT_S]     wait for and print /dev/nvmeXnY of NQN (namespace 1)
#   nvme_wait_gone NQN [TIMEOUT_S]    wait until no controller of NQN is left
#
# PCI binding (the VFIO tests; QEMU's emulated NVMe controller from run-in-vm --nvme)
#   qemu_nvme_bdf                  print the BDF of the first QEMU NVMe controller (1b36:0010)
#   pci_driver BDF                 print the driver bound to BDF (nothing when none)
#   pci_bind_vfio BDF              unbind, driver_override = vfio-pci, probe; 1 on failure
#   pci_bind_nvme BDF [TIMEOUT_S]  back to the kernel nvme driver; wait for and print its
#                                  namespace 1 block device (/dev/nvmeXnY)
#
# Kernel nvmet reference target (configfs, brd RAM disk)
#   nvmet_setup NQN ADDR PORT SIZE_MB [PORT_ID]   one namespace on /dev/ram0
#   nvmet_teardown                                undo it (safe to call twice)

NVMET_CFS=/sys/kernel/config/nvmet
INTEROP_OUT=${INTEROP_OUT:-${VM_OUT:-/tmp/ferrox-interop/out}}
FERROX_LOG=${FERROX_LOG:-$INTEROP_OUT/ferrox.log}
FERROX_STDOUT=${FERROX_STDOUT:-$INTEROP_OUT/ferrox.stdout}
FERROX_PID=""
FERROX_EXIT=""
FERROX_KILLED=0
_nvmet_nqn="" _nvmet_port_id=""

_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=${REPO_ROOT:-$(cd "$_lib_dir/../.." && pwd -P)}

# ---------------------------------------------------------------- reporting
step() { echo "---- $*"; }
pass() { echo "PASS: $*"; }
fail() {
    local name=$1; shift
    echo "FAIL: $name: ${*:-failed}" >&2
    exit 1
}

wait_for() {
    local t=$1; shift
    local end=$(( $(date +%s) + t ))
    until "$@"; do
        (( $(date +%s) < end )) || return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------- ferrox daemon
ferrox_bin() {
    local b
    for b in "${FERROX_BIN:-}" "$REPO_ROOT/target/release/ferrox" "$REPO_ROOT/target/debug/ferrox"; do
        [[ -n $b && -x $b ]] && { echo "$b"; return 0; }
    done
    return 1
}

# The daemon log with ANSI colour codes removed (tracing may colour even when not a tty).
_ferrox_log_plain() { sed 's/\x1b\[[0-9;]*m//g' "$FERROX_LOG" 2>/dev/null; }

ferrox_log_lines() { _ferrox_log_plain | wc -l; }

# True when the log after line $3 (default 0) matches the extended regex $1.
# (grep reads a here-string, not a pipe: with pipefail, grep -q closing a pipe early
# would make the writer die of SIGPIPE and the whole test look false.)
_ferrox_log_has() {
    local text
    text=$(_ferrox_log_plain | tail -n +"$(( ${2:-0} + 1 ))")
    grep -Eiq -- "$1" <<<"$text"
}

ferrox_log_wait() {   # REGEX TIMEOUT_S [FROM_LINE]
    wait_for "$2" _ferrox_log_has "$1" "${3:-0}"
}

_ferrox_alive() { [[ -n $FERROX_PID ]] && kill -0 "$FERROX_PID" 2>/dev/null; }

# True when the daemon is ready (or died: ferrox_start then reports it), false while it
# starts.  Ready = the log (stderr, after line $2) says "listening on ADDR:PORT", or, when
# the log level hides that info line, stdout (after line $3) has its
# "nvme connect -t tcp -a ADDR -s PORT" line.
_ferrox_ready() {
    local addr=${1%:*} port=${1##*:}
    _ferrox_log_has "listening on ${1//./\\.}([^0-9]|\$)" "$2" && return 0
    grep -Eq -- "nvme connect -t tcp -a ${addr//./\\.} -s $port( |\$)" \
        <<<"$(tail -n +"$(( $3 + 1 ))" "$FERROX_STDOUT" 2>/dev/null)" && return 0
    _ferrox_alive || return 0
    return 1
}

ferrox_start() {   # CONFIG [ADDR:PORT] [extra daemon args...]
    local config=$1 listen=${2:-127.0.0.1:4420} bin from from_out
    shift; [[ $# -gt 0 ]] && shift
    bin=$(ferrox_bin) || { echo "ferrox binary not found (build it, or set FERROX_BIN)" >&2; return 1; }
    [[ -r $config ]] || { echo "config $config not readable" >&2; return 1; }
    mkdir -p "$(dirname "$FERROX_LOG")" "$(dirname "$FERROX_STDOUT")"
    touch "$FERROX_LOG" "$FERROX_STDOUT"
    from=$(ferrox_log_lines) from_out=$(wc -l < "$FERROX_STDOUT")
    echo "==== ferrox start $(date '+%F %T'): $bin --config $config --log ${FERROX_LOG_LEVEL:-info} $*" >> "$FERROX_LOG"
    from=$(( from + 1 ))
    NO_COLOR=1 RUST_BACKTRACE=1 "$bin" --config "$config" --log "${FERROX_LOG_LEVEL:-info}" "$@" \
        >> "$FERROX_STDOUT" 2>> "$FERROX_LOG" < /dev/null &
    FERROX_PID=$!
    FERROX_EXIT="" FERROX_KILLED=0
    if ! wait_for "${FERROX_START_TIMEOUT:-60}" _ferrox_ready "$listen" "$from" "$from_out"; then
        echo "ferrox did not log 'listening on $listen' (nor print its nvme connect line) within ${FERROX_START_TIMEOUT:-60}s" >&2
        ferrox_stop 5 >/dev/null 2>&1 || true
        return 1
    fi
    if ! _ferrox_alive; then
        wait "$FERROX_PID" 2>/dev/null; FERROX_EXIT=$?
        FERROX_PID=""
        echo "ferrox exited with status $FERROX_EXIT before listening; log tail:" >&2
        tail -n 20 "$FERROX_LOG" >&2
        return 1
    fi
    echo "ferrox running (pid $FERROX_PID), listening on $listen"
}

ferrox_stop() {   # [TIMEOUT_S]
    local t=${1:-${FERROX_STOP_TIMEOUT:-20}} rc=0
    [[ -n $FERROX_PID ]] || return 0
    FERROX_KILLED=0
    if kill -0 "$FERROX_PID" 2>/dev/null; then
        kill -TERM "$FERROX_PID" 2>/dev/null || true
        if ! wait_for "$t" _ferrox_gone; then
            echo "ferrox (pid $FERROX_PID) ignored SIGTERM for ${t}s; sending SIGKILL" >&2
            kill -KILL "$FERROX_PID" 2>/dev/null || true
            FERROX_KILLED=1
        fi
    fi
    wait "$FERROX_PID" 2>/dev/null || rc=$?
    FERROX_EXIT=$rc
    FERROX_PID=""
    echo "==== ferrox stopped $(date '+%F %T'): exit status $rc$([[ $FERROX_KILLED == 1 ]] && echo ' (SIGKILL)')" >> "$FERROX_LOG"
    return 0
}

# The daemon is our child: once it exits it is a zombie until waited for, which kill -0
# still sees.  /proc/PID/stat state Z (or no entry) means it has gone.
_ferrox_gone() {
    local state
    state=$(awk '{ print $3 }' "/proc/$FERROX_PID/stat" 2>/dev/null) || return 0
    [[ -z $state || $state == Z ]]
}

# ---------------------------------------------------------------- NVMe host side
nvme_ctrl_for_nqn() {   # NQN [HOSTNQN]
    local c
    for c in /sys/class/nvme/nvme*; do
        [[ -r $c/subsysnqn && $(cat "$c/subsysnqn") == "$1" ]] || continue
        [[ -z ${2:-} || $(cat "$c/hostnqn" 2>/dev/null) == "$2" ]] || continue
        echo "${c##*/}"; return 0
    done
    return 1
}

# /dev/nvmeXnY of NQN, with or without native multipath (the parent is then nvme-subsysX).
_nvme_ns_for_nqn() {
    local b p
    for b in /sys/block/nvme*; do
        [[ ${b##*/} =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
        p=$(readlink -f "$b"); p=${p%/*}
        [[ -r $p/subsysnqn && $(cat "$p/subsysnqn") == "$1" && -b /dev/${b##*/} ]] || continue
        echo "/dev/${b##*/}"; return 0
    done
    return 1
}

nvme_wait_dev() {   # NQN [TIMEOUT_S]
    wait_for "${2:-30}" _nvme_ns_for_nqn "$1" >/dev/null || return 1
    _nvme_ns_for_nqn "$1"
}

_nvme_no_ctrl() { ! nvme_ctrl_for_nqn "$1" >/dev/null; }
nvme_wait_gone() {   # NQN [TIMEOUT_S]
    wait_for "${2:-30}" _nvme_no_ctrl "$1"
}

# ---------------------------------------------------------------- PCI binding
qemu_nvme_bdf() {
    local d
    for d in /sys/bus/pci/devices/*; do
        [[ $(cat "$d/vendor") == 0x1b36 && $(cat "$d/device") == 0x0010 ]] && { echo "${d##*/}"; return 0; }
    done
    return 1
}

pci_driver() {
    local l
    l=$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null) || return 0
    echo "${l##*/}"
}

pci_bind_vfio() {   # BDF
    local dev=/sys/bus/pci/devices/$1
    modprobe vfio-pci || return 1
    [[ -e $dev/driver ]] && echo "$1" > "$dev/driver/unbind"
    echo vfio-pci > "$dev/driver_override"
    echo "$1" > /sys/bus/pci/drivers_probe
    [[ $(pci_driver "$1") == vfio-pci ]]
}

_pci_nvme_ctrl() { local c; for c in "/sys/bus/pci/devices/$1"/nvme/nvme*; do [[ -e $c ]] && { echo "${c##*/}"; return 0; }; done; return 1; }

pci_bind_nvme() {   # BDF [TIMEOUT_S]
    local dev=/sys/bus/pci/devices/$1 t=${2:-15} ctrl nqn
    [[ -e $dev/driver ]] && echo "$1" > "$dev/driver/unbind"
    echo > "$dev/driver_override"
    modprobe nvme || return 1
    echo "$1" > /sys/bus/pci/drivers_probe
    wait_for "$t" _pci_nvme_ctrl "$1" >/dev/null || return 1
    [[ $(pci_driver "$1") == nvme ]] || return 1
    ctrl=$(_pci_nvme_ctrl "$1")
    wait_for "$t" test -s "/sys/class/nvme/$ctrl/subsysnqn" || return 1
    nqn=$(cat "/sys/class/nvme/$ctrl/subsysnqn")
    nvme_wait_dev "$nqn" "$t"
}

# ---------------------------------------------------------------- kernel nvmet (reference)
nvmet_setup() {   # NQN ADDR PORT SIZE_MB [PORT_ID]
    local nqn=$1 addr=$2 port=$3 size_mb=$4 pid=${5:-1} sub dev=/dev/ram0
    if ! modprobe nvmet || ! modprobe nvmet-tcp; then echo "cannot load nvmet/nvmet-tcp" >&2; return 1; fi
    [[ -d $NVMET_CFS ]] || { echo "$NVMET_CFS missing (configfs not mounted?)" >&2; return 1; }
    modprobe brd rd_nr=1 rd_size=$(( size_mb * 1024 )) max_part=0 || { echo "modprobe brd failed" >&2; return 1; }
    wait_for 10 test -b "$dev" || { echo "$dev did not appear" >&2; return 1; }
    sub=$NVMET_CFS/subsystems/$nqn
    _nvmet_nqn=$nqn _nvmet_port_id=$pid
    mkdir "$sub" || return 1
    echo 1 > "$sub/attr_allow_any_host"
    mkdir "$sub/namespaces/1" || return 1
    echo -n "$dev" > "$sub/namespaces/1/device_path"
    echo 1 > "$sub/namespaces/1/enable" || return 1
    mkdir "$NVMET_CFS/ports/$pid" || return 1
    echo tcp     > "$NVMET_CFS/ports/$pid/addr_trtype"
    echo ipv4    > "$NVMET_CFS/ports/$pid/addr_adrfam"
    echo "$addr" > "$NVMET_CFS/ports/$pid/addr_traddr"
    echo "$port" > "$NVMET_CFS/ports/$pid/addr_trsvcid"
    # Linking the subsystem into the port starts the TCP listener.
    ln -s "$sub" "$NVMET_CFS/ports/$pid/subsystems/$nqn" || return 1
    echo "kernel nvmet: $nqn on tcp $addr:$port, namespace 1 = $dev (brd, $size_mb MiB)"
}

nvmet_teardown() {
    [[ -n $_nvmet_nqn ]] || return 0
    local nqn=$_nvmet_nqn pid=$_nvmet_port_id sub=$NVMET_CFS/subsystems/$_nvmet_nqn
    nvme disconnect -n "$nqn" >/dev/null 2>&1 || true
    rm -f "$NVMET_CFS/ports/$pid/subsystems/$nqn" 2>/dev/null || true
    rmdir "$NVMET_CFS/ports/$pid" 2>/dev/null || true
    echo 0 > "$sub/namespaces/1/enable" 2>/dev/null || true
    rmdir "$sub/namespaces/1" "$sub" 2>/dev/null || true
    modprobe -r brd 2>/dev/null || true
    _nvmet_nqn=""
    return 0
}
