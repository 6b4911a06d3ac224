#!/usr/bin/env bash
# write_sizes.sh — what a write() costs by its size, and where an fsync's
# time goes, side by side on 127.0.0.1 only:
#   local       a plain directory on the same filesystem as the cache dir
#   fuse_floor  bin/tools/fuse_floor, a bare libfuse passthrough set up as
#               vectur-mount sets up the kernel (what FUSE itself costs)
#   vectur      bin/vectur-mount against a fresh Drive emulator, files under
#               runs/ (persisted), write_back=600 so no upload runs meanwhile
# 1. MB_SMALL MiB written in BS-byte write()s then closed, for each BS in
#    SIZES, on every target (MB/s; page cache synced before each).
# 2. vectur only: SIZE_MB MiB written in 1 MiB write()s, then fsync (vectur:
#    returns once the version is on Drive, md5 checked), then close, each
#    timed on its own; then the same file size written, closed and
#    `vectur-mount --sync`ed, for comparison (an fsync should cost what a
#    close + sync costs: no copy of the file).
#
# usage: bench/write_sizes.sh
# env:   SIZES ("4096 65536 1048576"), MB_SMALL (256), SIZE_MB (1024),
#        VECTUR_BIN (<repo>/bin), BENCH_TMP (parent of the work dir, /tmp)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-/usr/bin/python3}
BIN=${VECTUR_BIN:-$REPO/bin}
SIZES=${SIZES:-4096 65536 1048576}
MB_SMALL=${MB_SMALL:-256}
SIZE_MB=${SIZE_MB:-1024}
W=$(mktemp -d "${BENCH_TMP:-/tmp}/vectur-wsizes-XXXXXX")
EMU= FLOOR= VPID=

cleanup() {
	set +e
	for m in "$W/mnt" "$W/floor"; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m"
	done
	for p in $VPID $FLOOR; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill "$p" 2>/dev/null
	done
	[ -n "$EMU" ] && kill "$EMU" 2>/dev/null && wait "$EMU" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

wait_mounted() { # DIR
	for _ in $(seq 300); do
		mountpoint -q "$1" && return 0
		sleep 0.1
	done
	echo "write_sizes: $1 did not mount within 30 s" >&2
	return 1
}

mkdir -p "$W/mnt" "$W/local" "$W/floor" "$W/back"
mkfifo "$W/url.fifo"
"$PY" "$REPO/tests/emulator/drive-emulator" --listen 127.0.0.1:0 \
	--data-dir "$W/emu" --quiet >"$W/url.fifo" 2>"$W/emu.log" &
EMU=$!
read -r URL <"$W/url.fifo"
URL=${URL%/}
cat >"$W/rclone.conf" <<EOC
[gdrive]
type = drive
scope = drive
token = {"access_token":"x","token_type":"Bearer","refresh_token":"test-refresh-token","expiry":"2000-01-01T00:00:00Z"}
EOC
"$BIN/vectur-mount" -f --config "$W/rclone.conf" \
	-o "endpoint=$URL,cache_dir=$W/vc,write_back=600" gdrive:bench "$W/mnt" \
	2>"$W/vectur.log" &
VPID=$!
"$BIN/tools/fuse_floor" "$W/back" "$W/floor" -f 2>"$W/floor.log" &
FLOOR=$!
wait_mounted "$W/mnt"
wait_mounted "$W/floor"
mkdir -p "$W/mnt/runs/w"

# PATH BS MB [fsync]: writes MB MiB in BS-byte writes; prints
# "write_s fsync_s close_s"
writer() {
	"$PY" - "$@" <<'PY'
import os, sys, time
path, bs, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
do_fsync = len(sys.argv) > 4
buf = os.urandom(bs)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
t0 = time.monotonic()
for _ in range((mb << 20) // bs):
    os.write(fd, buf)
t1 = time.monotonic()
if do_fsync:
    os.fsync(fd)
t2 = time.monotonic()
os.close(fd)
t3 = time.monotonic()
print("%.6f %.6f %.6f" % (t1 - t0, t2 - t1, t3 - t2))
PY
}
mbs() { "$PY" -c "import sys; print('%.0f' % ($1 * 1.048576 / float(sys.argv[1])))" "$2"; }

echo "1. $MB_SMALL MiB in BS-byte write()s until close (MB/s)"
printf '%-10s %10s %10s %10s %14s\n' BS local fuse_floor vectur "vectur/local"
for bs in $SIZES; do
	row=()
	for d in "$W/local" "$W/floor" "$W/mnt/runs/w"; do
		sync
		read -r w _ c < <(writer "$d/s.bin" "$bs" "$MB_SMALL")
		row+=("$(mbs "$MB_SMALL" "$("$PY" -c "print($w + $c)")")")
		rm -f "$d/s.bin"
	done
	printf '%-10s %10s %10s %10s %13sx\n' "$bs" "${row[@]}" \
		"$("$PY" -c "print('%.2f' % (${row[2]} / ${row[0]}))")"
done

echo "2. vectur: $SIZE_MB MiB in 1 MiB writes, then fsync (on Drive), then close (s)"
sync
read -r w f c < <(writer "$W/mnt/runs/w/f.bin" 1048576 "$SIZE_MB" fsync)
echo "   write $w  fsync $f  close $c  ($(mbs "$SIZE_MB" "$("$PY" -c "print($w + $f + $c)")") MB/s to Drive)"
sync
read -r w _ c < <(writer "$W/mnt/runs/w/g.bin" 1048576 "$SIZE_MB")
t0=$(date +%s.%N)
"$BIN/vectur-mount" --sync "$W/mnt" >/dev/null 2>&1
t1=$(date +%s.%N)
s=$("$PY" -c "print('%.6f' % ($t1 - $t0))")
echo "   the same closed, then --sync: write $w  close $c  sync $s  ($(mbs "$SIZE_MB" "$("$PY" -c "print($w + $c + $s)")") MB/s to Drive)"
