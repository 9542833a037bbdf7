#!/bin/bash
# The login scenario, run as PID 1 of a test guest (cargo xtask vm-test).
# It drives a real sshd and real clients against the sshlogin in /payload,
# writes what it saw to /results and hands that back to the host as a tar
# archive on the third disk (/dev/vdc). The host judges; this script only
# records.
. /payload/guest-init.sh

STEPS="$R/steps"
step() { # NAME COMMAND...: runs it, records its exit status in $STEPS
    local name=$1
    shift
    "$@" > "$R/$name.out" 2>&1
    echo "$name $?" >> "$STEPS"
}

mkdir -p /dev/pts && (mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts)
hostname sshlogin-guest

uname -r > "$R/uname"
uname -m > "$R/arch"
. /etc/os-release && echo "$PRETTY_NAME" > "$R/os"
ssh -V 2> "$R/openssh"
/payload/sshlogin --version > "$R/sshlogin-version" 2>&1

# sshd's log lines need a /dev/log listener.
rsyslogd
ssh-keygen -A > /dev/null
mkdir -p /run/sshd

for u in sl-vm-alice sl-vm-bob sl-vm-carol sl-vm-dave sl-vm-erin; do
    id "$u" > /dev/null 2>&1 || useradd -m -s /bin/sh "$u"
    echo "$u:pw-$u-ok" | chpasswd
done
mkdir -p /root/keys
ssh-keygen -q -t ed25519 -N '' -f /root/keys/good
ssh-keygen -q -t ed25519 -N '' -f /root/keys/wrong
ssh-keygen -l -f /root/keys/good.pub | awk '{print $2}' > "$R/good-fingerprint"
for u in sl-vm-alice sl-vm-bob sl-vm-dave; do
    h=$(getent passwd "$u" | cut -d: -f6)
    mkdir -p "$h/.ssh"
    cp /root/keys/good.pub "$h/.ssh/authorized_keys"
    chown -R "$u:" "$h/.ssh"
    chmod 700 "$h/.ssh"
done

sshd_config() { # PORT USEPAM
    printf 'Port %s\nListenAddress 127.0.0.1\nUsePAM %s\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nLogLevel INFO\nPidFile none\n' "$1" "$2"
    for k in /etc/ssh/ssh_host_*_key; do echo "HostKey $k"; done
}
sshd_config 2201 yes > /etc/ssh/sshd_pam
sshd_config 2202 no > /etc/ssh/sshd_nopam
/usr/sbin/sshd -f /etc/ssh/sshd_pam
/usr/sbin/sshd -f /etc/ssh/sshd_nopam

/payload/sshlogin check --no-network --state-dir /var/lib/sshlogin > "$R/check.txt" 2> "$R/check.log"
echo $? > "$R/check.rc"

# The raw records too, for `sshlogin replay` on the host when a cell fails.
/payload/sshlogin capture -o "$R/capture.hex" 2> "$R/capture.log" &
capture=$!

SSH="ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 -o LogLevel=ERROR"
KEY="-o BatchMode=yes -o PasswordAuthentication=no -o IdentitiesOnly=yes"
PW="-o PubkeyAuthentication=no -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1"

scenario() { # SUFFIX DAEMON-ARGS...: the clients, with `sshlogin run ARGS` watching
    local suffix=$1
    shift
    STEPS="$R/steps$suffix"
    /payload/sshlogin run --state-dir "/var/lib/sshlogin$suffix" "$@" \
        > "$R/events$suffix.jsonl" 2> "$R/daemon$suffix.log" &
    local daemon=$!
    for _ in $(seq 1 120); do
        grep -q "probes attached" "$R/daemon$suffix.log" && break
        kill -0 "$daemon" 2> /dev/null || break
        sleep 0.5
    done

    # PAM (port 2201)
    step key-login $SSH $KEY -i /root/keys/good -p 2201 sl-vm-alice@127.0.0.1 'sleep 0.3'
    step wrong-key $SSH $KEY -i /root/keys/wrong -p 2201 sl-vm-bob@127.0.0.1 true
    step invalid-user $SSH $KEY -i /root/keys/wrong -p 2201 sl-vm-nosuch@127.0.0.1 true
    step wrong-password sshpass -p not-the-password $SSH $PW -p 2201 sl-vm-carol@127.0.0.1 true
    step password-login sshpass -p pw-sl-vm-erin-ok $SSH $PW -p 2201 sl-vm-erin@127.0.0.1 'sleep 0.3'
    # UsePAM no (port 2202)
    step nopam-key-login $SSH $KEY -i /root/keys/good -p 2202 sl-vm-dave@127.0.0.1 'sleep 0.3'
    step nopam-wrong-key $SSH $KEY -i /root/keys/wrong -p 2202 sl-vm-bob@127.0.0.1 true

    # Let the last closes and failures through the pipeline, then stop it
    # the way systemd does.
    sleep 3
    kill -TERM "$daemon"
    wait "$daemon"
    echo $? > "$R/daemon$suffix.rc"
}

# The default backend (auto), then, where it got fentry, the same clients
# again with the tracepoints: the host compares the two sets of events.
scenario ""
kill -TERM "$capture"
wait "$capture"
if grep -q "syscall_probes=fentry" "$R/daemon.log"; then
    scenario -tracepoints --syscall-probes tracepoints
fi
