#!/usr/bin/env bash
# mount_bench.sh — vectur-mount side by side with local disk, rclone mount and
# raw curl, in one run, on 127.0.0.1 only:
#   local         a plain directory on the same filesystem as the cache dirs
#   fuse_floor    the same through bin/tools/fuse_floor, a bare libfuse
#                 passthrough set up as vectur-mount sets up the kernel: what
#                 FUSE itself costs on this machine (no cache, no Drive)
#   vectur        bin/vectur-mount against a fresh Drive emulator
#                 (write_back=0), files under runs/bench/ (persisted)
#   rclone_local  rclone mount --vfs-cache-mode writes over a local directory
#   rclone_drive  rclone mount --vfs-cache-mode writes, drive backend, against
#                 a second emulator serving TLS on 127.0.0.1:443, in a private
#                 mount namespace with its own /etc/hosts, as in
#                 tests/integration/test_rclone_interop.py (RCLONE_DRIVE=0 skips)
#   curl          one resumable upload (a single PUT) against vectur's emulator,
#                 and an alt=media download of the file vectur reads cold, right
#                 before vectur reads it (bench/curl_baseline.sh style)
# Per target: SIZE_MB sequential write until close; write + fsync; NFILES
# 1 KiB files created in one directory; `ls -l` of them (page cache dropped,
# then again warm); remount with an empty cache dir; cold read of the first
# file (page cache dropped); warm read (right again); read with the page
# cache dropped but the mount's cache filled; md5 check (untimed); `ls -l`
# after the remount. Page cache is dropped (sync; echo 3 >
# /proc/sys/vm/drop_caches, root) before each cold measurement.
#
# Then, for vectur and curl, the cold read again with the emulator behind a
# capped link (NET_BW bytes/s shared by all connections, NET_LAT ms before
# each request; NET_BW=0 skips it).
#
# usage: bench/mount_bench.sh
# env:   SIZE_MB (1024), NFILES (10000), RCLONE_DRIVE (1), NET_BW (200000000),
#        NET_LAT (20), TARGETS (all: local fuse_floor vectur rclone_local
#        rclone_drive), VECTUR_BIN
#        (<repo>/bin; the binary is copied at start so a rebuild mid-run does
#        not matter), BENCH_TMP (parent of the work dir, default /tmp)
# Exits 0 unless something broke; PASS/MISS against the issue's targets is
# informational.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-/usr/bin/python3}
H="$REPO/bench/mount_bench.py"
EMULATOR=$REPO/tests/emulator/drive-emulator
NS_SCRIPT=$REPO/tests/integration/rclone_ns.sh
SIZE_MB=${SIZE_MB:-1024}
NFILES=${NFILES:-10000}
RCLONE_DRIVE=${RCLONE_DRIVE:-1}
TARGETS=${TARGETS:-local fuse_floor vectur rclone_local rclone_drive}  # vectur includes curl
want() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }
SYNC_TIMEOUT=${SYNC_TIMEOUT:-1800}
RD_WAIT=${RD_WAIT:-60}  # rclone drive: the longest wait for the small files' uploads
SIZE=$((SIZE_MB * 1024 * 1024))

now() { date +%s.%N; }
elapsed() { "$PY" -c "import sys; print('%.6f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
say() { echo "[$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)] $*" >&2; }
rec() { echo "$1 $2 $3" >>"$RES"; say "  $1 $2 = $3"; }
note() { echo "$1 note ${*:2}" >>"$RES"; say "  note [$1] ${*:2}"; }
DROP=1
drop() {
	sync
	if [ "$DROP" = 1 ] && ! echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
		DROP=0
		note all "could not drop the page cache (not root?): cold figures may be warm"
	fi
}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_mounted() { # DIR PID WHAT
	local i
	for i in $(seq 300); do
		mountpoint -q "$1" && return 0
		kill -0 "$2" 2>/dev/null || { say "$3 exited before mounting"; return 1; }
		sleep 0.1
	done
	say "$3 did not mount within 30 s"
	return 1
}

PIDS=() MOUNTS=()
unmount_all() {
	local m p
	set +e
	for m in "${MOUNTS[@]}"; do
		if mountpoint -q "$m" 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
		fi
	done
	for p in "${PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			# a mount drains for up to drain_timeout after unmount: give it a moment
			for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
			kill "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
	PIDS=() MOUNTS=()
}

# ---- the measurements, the same for every target ---------------------------
# Hooks per target: hook_sync TARGET (blocks until everything closed is on the
# remote; prints nothing) and hook_remount TARGET (unmount, mount again with
# an empty cache dir). DIR is where the files go.
PARTIAL=
timed_sync() { # TARGET METRIC [ADD_SECONDS]: runs hook_sync, records its time (+ADD)
	local t0 t1 d
	t0=$(now)
	if [ "$1" = rclone_drive ] && [ "$2" = sync_after_create ]; then
		# rclone's drive backend uploads small files slowly here (a few a
		# second): wait RD_WAIT s at most, then extrapolate.
		if ! SYNC_TIMEOUT=$RD_WAIT hook_sync "$1" 2>/dev/null; then
			d=$(($(grep -c ': Copied (' "$RCLONE_LOG" || true) - RCLONE_BASE - 2))
			rec "$1" "$2" "~$("$PY" -c "print('%.0f' % ($NFILES * $RD_WAIT / max($d, 1)))")s"
			note "$1" "small-file uploads: $d of $NFILES in ${RD_WAIT}s, the rest not waited for" \
				"(the ~ figure is extrapolated); ls -l of them ran while rclone was uploading;" \
				"ls -l after remount skipped"
			PARTIAL=1
			return 0
		fi
	else
		hook_sync "$1"
	fi
	t1=$(now)
	d=$(elapsed "$t0" "$t1")
	[ -n "${3:-}" ] && d=$("$PY" -c "print('%.6f' % ($d + $3))")
	rec "$1" "$2" "$d"
}

hook_before_cold() { :; }  # TARGET: runs before the cold read (vectur's times curl's download)

timed_read() { # TARGET FILE METRIC: reads all of FILE (SIZE bytes) and records the time
	local out
	out=$("$PY" "$H" read "$2")
	[ "${out#* }" = "$SIZE" ] || { say "$1: $3 got ${out#* } bytes, want $SIZE"; return 1; }
	rec "$1" "$3" "${out% *}"
}

# Targets with nothing remote: no sync, no cache to read back from.
on_disk() { [ "$1" = local ] || [ "$1" = fuse_floor ]; }

bench_target() { # TARGET DIR
	local t=$1 d=$2 s
	say "== $t: $d"
	note "$t" "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	mkdir -p "$d" "$d/small"
	drop
	s=$("$PY" "$H" write "$d/w.bin" "$SIZE_MB" 1)
	rec "$t" write_close "$s"
	hook_closed 1
	on_disk "$t" || timed_sync "$t" sync_after_write "$s"
	drop
	s=$("$PY" "$H" write "$d/f.bin" "$SIZE_MB" 2 fsync)
	rec "$t" write_fsync "$s"
	hook_closed 1
	on_disk "$t" || hook_sync "$t"
	drop
	s=$("$PY" "$H" create "$d/small" "$NFILES" 1024)
	rec "$t" create "$s"
	hook_closed "$NFILES"
	on_disk "$t" || timed_sync "$t" sync_after_create
	drop
	s=$("$PY" "$H" lsl "$d/small" "$NFILES")
	rec "$t" lsl "$s"
	s=$("$PY" "$H" lsl "$d/small" "$NFILES")
	rec "$t" lsl_warm "$s"
	on_disk "$t" || hook_remount "$t"
	hook_before_cold "$t"
	drop
	timed_read "$t" "$d/w.bin" cold_read || return 1
	timed_read "$t" "$d/w.bin" warm_read || return 1
	if ! on_disk "$t"; then
		drop
		timed_read "$t" "$d/w.bin" cache_read || return 1
	fi
	[ "$("$PY" "$H" md5 "$d/w.bin")" = "$MD5_1" ] || { say "$t: md5 of w.bin differs"; return 1; }
	[ "$("$PY" "$H" md5 "$d/f.bin")" = "$MD5_2" ] || { say "$t: md5 of f.bin differs"; return 1; }
	if ! on_disk "$t" && [ -z "$PARTIAL" ]; then
		hook_remount "$t"
		drop
		s=$("$PY" "$H" lsl "$d/small" "$NFILES")
		rec "$t" lsl_remount "$s"
	fi
}

# ---- rclone (both targets): mount, wait for uploads through rc ----------------
RC_PORT=
rclone_mount() { # REMOTE MNT CACHE_DIR TARGET
	RC_PORT=$(free_port)
	mkdir -p "$2" "$3"
	RCLONE_LOG=$WORK/$4.log
	touch "$RCLONE_LOG"
	RCLONE_BASE=$(grep -c ': Copied (' "$RCLONE_LOG" || true) RCLONE_CLOSED=0
	rclone mount "$1" "$2" --vfs-cache-mode writes --vfs-write-back 0s \
		--cache-dir "$3" --rc --rc-addr "127.0.0.1:$RC_PORT" --rc-no-auth \
		--log-file "$WORK/$4.log" -v ${RCLONE_EXTRA:-} </dev/null &
	RCLONE_PID=$!
	PIDS+=("$RCLONE_PID")
	MOUNTS+=("$2")
	wait_mounted "$2" "$RCLONE_PID" "rclone mount ($4)"
}
rclone_unmount() { # MNT
	local i
	fusermount3 -u "$1"
	for i in $(seq 600); do kill -0 "$RCLONE_PID" 2>/dev/null || break; sleep 0.1; done
	kill "$RCLONE_PID" 2>/dev/null || true
	wait "$RCLONE_PID" 2>/dev/null || true
}
# vfs/stats counts only files rclone has queued; a close() returns before
# rclone has handled the RELEASE that queues the file (slow with the drive
# backend), so also wait for one "Copied" log line per file closed since
# the mount (RCLONE_CLOSED, kept by bench_target through hook_closed).
RCLONE_CLOSED=0 RCLONE_LOG=
hook_closed() { RCLONE_CLOSED=$((RCLONE_CLOSED + $1)); }
rclone_wait_uploads() {
	local end=$(($(date +%s) + SYNC_TIMEOUT)) n c
	while :; do
		c=$(grep -c ': Copied (' "$RCLONE_LOG" || true)
		n=$(curl -s -X POST "http://127.0.0.1:$RC_PORT/vfs/stats" | "$PY" -c '
import json, sys
d = json.load(sys.stdin).get("diskCache", {})
print(d.get("uploadsInProgress", 0) + d.get("uploadsQueued", 0))')
		[ "$n" = 0 ] && [ "$((c - RCLONE_BASE))" -ge "$RCLONE_CLOSED" ] && return 0
		[ "$(date +%s)" -lt "$end" ] || { say "rclone: $n uploads pending, $((c - RCLONE_BASE)) of $RCLONE_CLOSED files copied after ${SYNC_TIMEOUT}s"; return 1; }
		sleep 0.1
	done
}

# ---- the rclone drive target: runs inside the private namespace ---------------
if [ "${1:-}" = "--inner-rclone-drive" ]; then
	WORK=$2
	RES=$WORK/results
	MD5_1=$3 MD5_2=$4
	EMU_PID=
	inner_cleanup() {
		set +e
		unmount_all
		[ -n "$EMU_PID" ] && { kill "$EMU_PID" 2>/dev/null; wait "$EMU_PID" 2>/dev/null; }
		true
	}
	trap inner_cleanup EXIT
	trap 'exit 130' INT TERM
	D=$WORK/rdrive
	mkdir -p "$D"
	mkfifo "$D/url.fifo"
	"$PY" "$EMULATOR" --listen 127.0.0.1:443 --data-dir "$D/emu" \
		--tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key" --quiet \
		>"$D/url.fifo" 2>"$D/emu.log" &
	EMU_PID=$!
	read -r URL <"$D/url.fifo" || { say "TLS emulator did not start: $(tail -3 "$D/emu.log")"; exit 1; }
	say "rclone_drive: emulator $URL (pid $EMU_PID)"
	mkdir -p "$D/home" "$D/no-certs"
	: >"$D/rclone.conf"
	export HOME=$D/home XDG_CONFIG_HOME=$D/home/.config XDG_CACHE_HOME=$D/home/.cache
	export RCLONE_CONFIG=$D/rclone.conf SSL_CERT_FILE=$WORK/pki/ca.pem SSL_CERT_DIR=$D/no-certs
	export RCLONE_CONFIG_EMU_TYPE=drive RCLONE_CONFIG_EMU_SCOPE=drive
	export RCLONE_CONFIG_EMU_CLIENT_ID=vectur-bench.apps.googleusercontent.com
	export RCLONE_CONFIG_EMU_CLIENT_SECRET=vectur-bench-secret
	export RCLONE_CONFIG_EMU_TOKEN='{"access_token":"x","token_type":"Bearer","refresh_token":"test-refresh-token","expiry":"2000-01-01T00:00:00Z"}'
	unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
	N=0
	hook_sync() { rclone_wait_uploads; }
	hook_remount() {
		rclone_unmount "$D/mnt"
		N=$((N + 1))
		rclone_mount emu: "$D/mnt" "$D/cache$N" rclone_drive
	}
	rclone_mount emu: "$D/mnt" "$D/cache0" rclone_drive
	bench_target rclone_drive "$D/mnt/bench"
	exit 0
fi

hook_closed() { :; }  # the rclone targets count closed files

# ---- the main run ------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/vectur-mount-bench.XXXXXX")
RES=$WORK/results
: >"$RES"
EMU_PID= NS_PID=
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	[ -n "$NS_PID" ] && { kill "$NS_PID" 2>/dev/null; wait "$NS_PID" 2>/dev/null; }
	unmount_all
	[ -n "$EMU_PID" ] && { kill "$EMU_PID" 2>/dev/null; wait "$EMU_PID" 2>/dev/null; }
	if [ "${KEEP:-0}" = 1 ]; then echo "mount_bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BIN=${VECTUR_BIN:-$REPO/bin}
[ -x "$BIN/vectur-mount" ] || { echo "mount_bench: build first (make): no $BIN/vectur-mount" >&2; exit 1; }
cp "$BIN/vectur-mount" "$WORK/vectur-mount"
VM=$WORK/vectur-mount
FF=$BIN/tools/fuse_floor
for tool in rclone curl fusermount3; do
	command -v "$tool" >/dev/null || { echo "mount_bench: $tool is not installed" >&2; exit 1; }
done

echo "# mount_bench: $(date -u), $(nproc) cores, $(uname -r), SIZE_MB=$SIZE_MB NFILES=$NFILES"
echo "# vectur-mount: $("$VM" --version 2>&1 | head -1); $(rclone version | head -1); work dir $WORK ($(df --output=source,fstype "$WORK" | tail -1 | tr -s ' '))"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "computing the expected md5s"
MD5_1=$("$PY" "$H" expect "$SIZE_MB" 1)
MD5_2=$("$PY" "$H" expect "$SIZE_MB" 2)

# ---- (a) local disk ------------------------------------------------------------
hook_sync() { :; }
hook_remount() { :; }
if want local; then
	bench_target local "$WORK/local"
	# Kept until the end: on ext4 without a journal (this VM's root fs),
	# creating files right after deleting 10,000 scans past every
	# recently deleted inode, which would slow whoever runs next.
fi

# ---- (a2) the FUSE floor: a bare passthrough of a local directory -----------------
if want fuse_floor; then
	[ -x "$FF" ] || { say "no $FF (make)"; exit 1; }
	mkdir -p "$WORK/ffroot" "$WORK/ffmnt"
	"$FF" "$WORK/ffroot" "$WORK/ffmnt" -f >"$WORK/fuse_floor.out" 2>&1 </dev/null &
	FF_PID=$!
	PIDS+=("$FF_PID")
	MOUNTS+=("$WORK/ffmnt")
	wait_mounted "$WORK/ffmnt" "$FF_PID" fuse_floor || exit 1
	bench_target fuse_floor "$WORK/ffmnt"
	fusermount3 -u "$WORK/ffmnt"
	wait "$FF_PID" 2>/dev/null || true
	PIDS=() MOUNTS=()
	# Its files stay until the end, as local's do.
fi
if want vectur; then

# ---- the emulator for vectur and curl ------------------------------------------
mkfifo "$WORK/url.fifo"
"$PY" "$EMULATOR" --listen 127.0.0.1:0 --data-dir "$WORK/emu" --quiet >"$WORK/url.fifo" 2>"$WORK/emu.log" &
EMU_PID=$!
read -r URL <"$WORK/url.fifo"
URL=${URL%/}
say "emulator: $URL (pid $EMU_PID)"

# ---- (e) curl against it -------------------------------------------------------
TOKEN=$(curl -sS -d grant_type=refresh_token -d refresh_token=test-refresh-token "$URL/token" |
	"$PY" -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
AUTH="Authorization: Bearer $TOKEN"
"$PY" "$H" write "$WORK/src.bin" "$SIZE_MB" 1 >/dev/null
sync  # the source stays in the page cache: the upload times HTTP, not the disk
loc=$(curl -sS -D - -o /dev/null -H "$AUTH" -H 'Content-Type: application/json; charset=UTF-8' \
	-H "X-Upload-Content-Length: $SIZE" -d '{"name":"curl.bin"}' \
	"$URL/upload/drive/v3/files?uploadType=resumable&fields=id,md5Checksum" |
	tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
t0=$(now)
meta=$(curl -sS -X PUT -H "Expect:" -H "Content-Range: bytes 0-$((SIZE - 1))/$SIZE" -T "$WORK/src.bin" "$loc")
t1=$(now)
rm -f "$WORK/src.bin"
[ "$(echo "$meta" | "$PY" -c 'import sys, json; print(json.load(sys.stdin)["md5Checksum"])')" = "$MD5_1" ] ||
	{ say "curl upload: md5 mismatch: $meta"; exit 1; }
rec curl upload "$(elapsed "$t0" "$t1")"
curl_get() { # ID [METRIC]: downloads file ID (page cache dropped), records the time as METRIC
	local t0 t1 out
	drop
	t0=$(now)
	out=$(curl -sS -o /dev/null -H "$AUTH" -w '%{http_code} %{size_download}' "$URL/drive/v3/files/$1?alt=media")
	t1=$(now)
	[ "$out" = "200 $SIZE" ] || { say "curl download failed: $out"; exit 1; }
	[ -z "${2:-}" ] || rec curl "$2" "$(elapsed "$t0" "$t1")"
}
# curl downloads the file vectur reads cold, right before vectur does: this
# VM's disk is cached by its host, and a file read minutes after it was
# written comes from the disk at a fraction of the speed of one just
# written. An untimed download first puts both reads on the same footing.
W_ID=
hook_before_cold() {
	W_ID=$(curl -sS -G -H "$AUTH" --data-urlencode "q=name='w.bin' and trashed=false" \
		--data-urlencode "fields=files(id)" "$URL/drive/v3/files" |
		"$PY" -c 'import sys, json; print(json.load(sys.stdin)["files"][0]["id"])')
	curl_get "$W_ID"
	curl_get "$W_ID" download
}

# ---- (b) vectur-mount ------------------------------------------------------------
cat >"$WORK/rclone.conf" <<EOF
[gdrive]
type = drive
scope = drive
token = {"access_token":"x","token_type":"Bearer","refresh_token":"test-refresh-token","expiry":"2000-01-01T00:00:00Z"}
EOF
VMNT=$WORK/vmnt
mkdir -p "$VMNT"
VN=0
vectur_mount() {
	VN=$((VN + 1))
	env -u RCLONE_CONFIG "$VM" --config "$WORK/rclone.conf" \
		-o "endpoint=$URL,cache_dir=$WORK/vcache$VN,write_back=0,drain_timeout=600" \
		-f gdrive:bench "$VMNT" >>"$WORK/vectur-mount.out" 2>&1 </dev/null &
	VM_PID=$!
	PIDS+=("$VM_PID")
	MOUNTS+=("$VMNT")
	wait_mounted "$VMNT" "$VM_PID" "vectur-mount" || { tail -20 "$WORK/vectur-mount.out" >&2; exit 1; }
}
hook_sync() {
	local rc=0
	timeout "$SYNC_TIMEOUT" "$VM" --sync "$VMNT" >"$WORK/sync.out" 2>&1 </dev/null || rc=$?
	[ "$rc" = 0 ] || { say "vectur-mount --sync exited $rc: $(tail -3 "$WORK/sync.out")"; return 1; }
}
hook_remount() {
	local i
	fusermount3 -u "$VMNT"
	for i in $(seq 6000); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$VM_PID" 2>/dev/null; then say "vectur-mount $VM_PID still running 600 s after unmount"; return 1; fi
	wait "$VM_PID" || { say "vectur-mount exited $? at unmount"; tail -20 "$WORK/vcache$VN/vectur-mount.log" >&2; return 1; }
	rm -rf "$WORK/vcache$VN"
	vectur_mount
}
vectur_mount
bench_target vectur "$VMNT/runs/bench"
# A network in the way: on loopback the emulator serves 2+ GB/s and a cold
# read through FUSE is bound by this machine's CPU (copies); with a capped,
# slower link (NET_BW bytes/s shared by all connections, NET_LAT ms before
# each request) curl and vectur cross the same link.
if [ "${NET_BW:-200000000}" != 0 ]; then
	curl -sS -X POST -d "{\"bandwidth\": ${NET_BW:-200000000}, \"latency_ms\": ${NET_LAT:-20}}" \
		"$URL/_emu/faults" >/dev/null
	note all "net rows: emulator capped at ${NET_BW:-200000000} B/s, ${NET_LAT:-20} ms per request"
	curl_get "$W_ID" download_net
	hook_remount vectur
	drop
	timed_read vectur "$VMNT/runs/bench/w.bin" cold_read_net || exit 1
	curl -sS -X DELETE "$URL/_emu/faults" >/dev/null
fi
if grep -iE 'error|warn|fail' "$WORK/vcache$VN/vectur-mount.log" "$WORK/vectur-mount.out" 2>/dev/null | head -5 >"$WORK/vwarn"; [ -s "$WORK/vwarn" ]; then
	note vectur "log lines: $(tr '\n' '|' <"$WORK/vwarn" | cut -c1-400)"
fi
fusermount3 -u "$VMNT"
wait "$VM_PID" 2>/dev/null || true
PIDS=() MOUNTS=()
kill "$EMU_PID" 2>/dev/null; wait "$EMU_PID" 2>/dev/null || true
EMU_PID=
hook_before_cold() { :; }
rm -rf "$WORK"/vcache* "$WORK/emu"
fi

if want rclone_local; then

# ---- (c) rclone mount over a local directory -----------------------------------------
: >"$WORK/empty.conf"
RN=0
hook_closed() { RCLONE_CLOSED=$((RCLONE_CLOSED + $1)); }
hook_sync() { rclone_wait_uploads; }
hook_remount() {
	rclone_unmount "$WORK/rmnt"
	RN=$((RN + 1))
	rclone_mount "$WORK/rremote" "$WORK/rmnt" "$WORK/rcache$RN" rclone_local
}
mkdir -p "$WORK/rremote"
export RCLONE_CONFIG=$WORK/empty.conf
rclone_mount "$WORK/rremote" "$WORK/rmnt" "$WORK/rcache0" rclone_local
bench_target rclone_local "$WORK/rmnt/bench"
rclone_unmount "$WORK/rmnt"
PIDS=() MOUNTS=()
rm -rf "$WORK/rremote" "$WORK"/rcache*
fi

# ---- (d) rclone mount against an emulator over TLS, in a private namespace -------
if ! want rclone_drive; then
	:
elif [ "$RCLONE_DRIVE" != 1 ]; then
	note rclone_drive "skipped (RCLONE_DRIVE=$RCLONE_DRIVE)"
elif ! unshare -m --propagation private true 2>/dev/null; then
	note rclone_drive "skipped: cannot make a private mount namespace (unshare -m)"
elif ! "$PY" -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 443))' 2>/dev/null; then
	note rclone_drive "skipped: 127.0.0.1:443 is taken (the rclone interop test may be running)"
else
	P=$WORK/pki
	mkdir -p "$P"
	ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
	hosts="www.googleapis.com oauth2.googleapis.com accounts.google.com"
	{
		openssl req -x509 "${ec[@]}" -keyout "$P/ca.key" -out "$P/ca.pem" -days 2 \
			-subj "/CN=vectur mount-bench CA" -addext basicConstraints=critical,CA:TRUE \
			-addext keyUsage=critical,keyCertSign,cRLSign
		openssl req "${ec[@]}" -keyout "$P/server.key" -out "$P/server.csr" -subj /CN=www.googleapis.com
		printf 'subjectAltName=%s,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
			"$(for h in $hosts; do printf 'DNS:%s,' "$h"; done | sed 's/,$//')" >"$P/server.ext"
		openssl x509 -req -in "$P/server.csr" -CA "$P/ca.pem" -CAkey "$P/ca.key" -CAcreateserial \
			-days 2 -extfile "$P/server.ext" -out "$P/server.pem"
	} >"$P/openssl.log" 2>&1
	printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.0.1 %s\n' "$hosts" >"$P/hosts"
	unshare -m --propagation private bash "$NS_SCRIPT" "$P/hosts" \
		bash "$REPO/bench/mount_bench.sh" --inner-rclone-drive "$WORK" "$MD5_1" "$MD5_2" &
	NS_PID=$!
	rc=0
	wait "$NS_PID" || rc=$?
	NS_PID=
	[ "$rc" = 0 ] || note rclone_drive "the run failed (exit $rc); see above"
	[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK/rdrive"
fi

# ---- the report -------------------------------------------------------------------
echo
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg); page cache dropped before cold measurements: $([ "$DROP" = 1 ] && echo yes || echo NO)"
"$PY" "$H" table "$RES" "$SIZE_MB" "$NFILES"
