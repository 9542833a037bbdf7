#!/bin/bash
# PID 1 of the guest of `cargo xtask bench --guest`: the syscall table of
# the system bench (nothing / tracepoints / fentry, alternating) on the
# guest's kernel. Results go back as a tar archive on /dev/vdc.
. /payload/guest-init.sh
uname -r > "$R/uname"
. /etc/os-release && echo "$PRETTY_NAME" > "$R/os"
nproc > "$R/cpus"
/payload/sshlogin-bench --guest-syscalls /payload/sshlogin > "$R/syscalls.txt" 2> "$R/bench.log"
echo $? > "$R/bench.rc"
