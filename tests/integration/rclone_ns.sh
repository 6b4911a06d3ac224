#!/usr/bin/env bash
# rclone_ns.sh — runs one command with a private /etc/hosts, for the rclone
# interop test. Call it as
#     unshare -m --propagation private bash rclone_ns.sh HOSTS_FILE CMD [ARG...]
# It bind-mounts HOSTS_FILE over /etc/hosts in the new mount namespace, so
# www.googleapis.com can point at the emulator on loopback, and then execs CMD:
# the command keeps this process's PID, so the caller can kill it by the PID it
# started. It refuses to run in the caller's own mount namespace: the
# machine's real /etc/hosts is never touched.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: unshare -m --propagation private bash $0 HOSTS_FILE CMD [ARG...]" >&2
	exit 2
fi
hosts=$1
shift

# unshare execs us, so our parent is whoever ran unshare: if we share its mount
# namespace, unshare was left out and the bind mount would be seen system-wide.
if [ "$(readlink /proc/self/ns/mnt)" = "$(readlink "/proc/$PPID/ns/mnt")" ]; then
	echo "$0: not in a private mount namespace; run me under 'unshare -m --propagation private'" >&2
	exit 2
fi
if [ ! -f "$hosts" ]; then
	echo "$0: hosts file $hosts not found" >&2
	exit 2
fi

mount --bind "$hosts" /etc/hosts
exec "$@"
