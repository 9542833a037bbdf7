#!/bin/bash
# PID 1 of the guest of `cargo xtask bench --guest`: the syscall table of
# the system bench (nothing / tracepoints / fentry, alternating) on the
# guest's kernel. Results go back as a tar archive on /dev/vdc.
set -u
R=/results
mkdir -p "$R"
finish() {
    tar -cf /dev/vdc -C "$R" .
    sync
    echo "guest: done"
    echo o > /proc/sysrq-trigger
    sleep 30
}
trap finish EXIT
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs tmpfs /run
mountpoint -q /tmp || mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
ip link set lo up
uname -r > "$R/uname"
. /etc/os-release && echo "$PRETTY_NAME" > "$R/os"
nproc > "$R/cpus"
/payload/sshlogin-bench --guest-syscalls /payload/sshlogin > "$R/syscalls.txt" 2> "$R/bench.log"
echo $? > "$R/bench.rc"
