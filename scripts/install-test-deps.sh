#!/usr/bin/env bash
# install-test-deps.sh — install (from Debian packages) everything Ferrox's tests need: a real
# etcd for the cluster store's tests, and for the kernel-interop tests the VM runner
# (scripts/interop/run-in-vm), the suite, the benchmark.
# Idempotent and quiet: does nothing, and needs no network, when all is installed.
#
#   qemu-system-x86    the emulator the interop VM runs in (TCG; KVM optional)
#   linux-image-amd64  a kernel in /boot with modules (9p, nvme-tcp, nvmet-tcp, brd, xfs,
#                      nf_tables, ...); the guest boots it, not the host
#   busybox-static     the only binary in the guest's initramfs
#   kmod               modprobe: resolves module dependencies for the initramfs and in the guest
#   nvme-cli fio       the initiator tools, run inside the guest
#   e2fsprogs xfsprogs mkfs.ext4/fsck.ext4, mkfs.xfs/xfs_repair (file-system step)
#   nftables           drops NVMe/TCP packets to simulate an abrupt host loss (KATO step)
#   iproute2           ip (bring lo up), ss
#   util-linux coreutils procps  blockdev, losetup, flock, timeout, sha256sum, pgrep
#   python3            parses fio's JSON in the benchmark
#   xz-utils zstd      decompress kernel modules when the kernel ships them compressed
#   protobuf-compiler libprotobuf-dev  protoc and the well-known .proto files, for the
#                      control crate's gRPC code generation (build time)
#   etcd-server        the etcd binary: the cluster store's tests start their own members
#                      on loopback ports (apt starts no service in a container; the
#                      tests never use one)
#
# Usage: sudo scripts/install-test-deps.sh      (or as root; uses sudo when not root)
# INSTALL_VERBOSE=1 shows apt's output.
set -euo pipefail

pkgs=(qemu-system-x86 linux-image-amd64 busybox-static kmod nvme-cli fio
      e2fsprogs xfsprogs nftables iproute2 util-linux coreutils procps
      python3 xz-utils zstd protobuf-compiler libprotobuf-dev etcd-server)

missing=()
status=" $(dpkg-query -W -f='${Package}=${db:Status-Status} ' "${pkgs[@]}" 2>/dev/null || true) "
for p in "${pkgs[@]}"; do
    [[ $status == *" $p=installed "* ]] || missing+=("$p")
done

if (( ${#missing[@]} > 0 )); then
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null ||
            { echo "install-test-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    echo "install-test-deps: installing ${missing[*]}" >&2
    out=/dev/null
    [[ ${INSTALL_VERBOSE:-0} == 1 ]] && out=/dev/stderr
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they are missing or older than a day.
    if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n1) ]]; then
        "${sudo[@]}" apt-get update -qq >"$out" 2>&1 ||
            { echo "install-test-deps: apt-get update failed (INSTALL_VERBOSE=1 shows why)" >&2; exit 1; }
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$out" 2>&1 ||
        { echo "install-test-deps: apt-get install failed (INSTALL_VERBOSE=1 shows why)" >&2; exit 1; }
fi

command -v etcd >/dev/null ||
    { echo "install-test-deps: no etcd on the PATH after installing etcd-server" >&2; exit 1; }
ls /boot/vmlinuz-* >/dev/null 2>&1 ||
    { echo "install-test-deps: no kernel in /boot after installing linux-image-amd64" >&2; exit 1; }
# Debian installs /boot/vmlinuz-* mode 0600; QEMU runs as the calling user.
if [[ $(id -u) != 0 ]]; then
    for k in /boot/vmlinuz-*; do
        [[ -r $k ]] || echo "install-test-deps: note: $k is not readable by $(id -un):" \
            "run the interop tests as root, or 'sudo chmod a+r $k'" >&2
    done
fi
exit 0
