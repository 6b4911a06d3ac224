#!/usr/bin/env bash
# curl_baseline.sh — raw-HTTP baseline for the Drive emulator: upload and
# download a 1 GiB file over loopback with curl against a fresh emulator,
# and print MB/s (10^6 bytes/s) for each. Benchmarks of vectur compare
# against these numbers ("transfers vs raw HTTP to the same emulator").
#
# Usage: bench/curl_baseline.sh            # 1 GiB, one run per mode
#        SIZE_MB=256 RUNS=3 CHUNK_MB=8 bench/curl_baseline.sh
# Modes: media (one POST uploadType=media) and resumable (a session, then
# the file in CHUNK_MB-sized PUTs; default one chunk of the whole file).
# Each measurement gets a fresh emulator and data dir, removed afterwards:
# on this VM, page cache for new data costs several times more CPU while
# earlier gigabytes are still cached, which would make later runs slower
# for reasons that are not the server's.
set -euo pipefail

SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-1}
CHUNK_MB=${CHUNK_MB:-$SIZE_MB}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EMU="$ROOT/tests/emulator/drive-emulator"
PY=${PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/curl-baseline.XXXXXX")
EMU_PID=

stop_emulator() {
	if [ -n "$EMU_PID" ]; then
		kill "$EMU_PID" 2>/dev/null || true
		wait "$EMU_PID" 2>/dev/null || true
		EMU_PID=
	fi
	rm -rf "$WORK/data" "$WORK/url.fifo"
}
cleanup() {
	stop_emulator
	rm -rf "$WORK"
}
trap cleanup EXIT

json() { "$PY" -c 'import sys, json; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
mbps() { "$PY" -c 'import sys; print("%.0f" % (float(sys.argv[1]) / 1e6))' "$1"; }

start_emulator() {
	mkfifo "$WORK/url.fifo"
	"$PY" "$EMU" --listen 127.0.0.1:0 --data-dir "$WORK/data" --quiet > "$WORK/url.fifo" 2>> "$WORK/emu.log" &
	EMU_PID=$!
	read -r URL < "$WORK/url.fifo"
	TOKEN=$(curl -sS -d grant_type=refresh_token -d refresh_token=test-refresh-token "$URL/token" |
		json access_token)
	AUTH="Authorization: Bearer $TOKEN"
	sync  # start each measurement with no dirty pages of an earlier one
}

echo "making a ${SIZE_MB} MiB test file..." >&2
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$WORK/src.bin"
SRC_MD5=$(md5sum "$WORK/src.bin" | cut -d' ' -f1)
SIZE=$((SIZE_MB * 1024 * 1024))
CHUNK=$((CHUNK_MB * 1024 * 1024))
# Resumable chunks are cut beforehand so the timing sees only HTTP.
if [ "$CHUNK" -ge "$SIZE" ]; then
	PARTS=("$WORK/src.bin")
else
	split -b "$CHUNK" -d -a 4 "$WORK/src.bin" "$WORK/part."
	PARTS=("$WORK"/part.*)
fi

check_md5() {
	if [ "$1" != "$SRC_MD5" ]; then echo "md5 mismatch: got $1 want $SRC_MD5" >&2; exit 1; fi
}

download() {
	local id=$1 out
	out=$(curl -sS -o /dev/null -H "$AUTH" -w '%{http_code} %{size_download} %{speed_download}' \
		"$URL/drive/v3/files/$id?alt=media")
	set -- $out
	[ "$1" = 200 ] && [ "$2" = "$SIZE" ] || { echo "download failed: $out" >&2; exit 1; }
	echo "$3"
}

for run in $(seq "$RUNS"); do
	# media: the whole file in one request.
	start_emulator
	out=$(curl -sS -H "$AUTH" -H 'Content-Type: application/octet-stream' -X POST -T "$WORK/src.bin" \
		-w '\n%{speed_upload}' "$URL/upload/drive/v3/files?uploadType=media&fields=id,md5Checksum")
	meta=$(echo "$out" | head -n1)
	up=$(echo "$out" | tail -n1)
	check_md5 "$(echo "$meta" | json md5Checksum)"
	down=$(download "$(echo "$meta" | json id)")
	stop_emulator
	echo "run $run media      upload $(mbps "$up") MB/s   download $(mbps "$down") MB/s"

	# resumable: start a session, then PUT the bytes in CHUNK_MB chunks.
	start_emulator
	loc=$(curl -sS -D - -o /dev/null -H "$AUTH" -H 'Content-Type: application/json; charset=UTF-8' \
		-H "X-Upload-Content-Length: $SIZE" -d '{"name":"big.bin"}' \
		"$URL/upload/drive/v3/files?uploadType=resumable&fields=id,md5Checksum" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	t0=$(date +%s.%N)
	off=0
	for part in "${PARTS[@]}"; do
		n=$(stat -c %s "$part")
		meta=$(curl -sS -X PUT -H "Content-Range: bytes $off-$((off + n - 1))/$SIZE" -T "$part" "$loc")
		off=$((off + n))
	done
	t1=$(date +%s.%N)
	check_md5 "$(echo "$meta" | json md5Checksum)"
	up=$("$PY" -c "print($SIZE / ($t1 - $t0))")
	down=$(download "$(echo "$meta" | json id)")
	stop_emulator
	echo "run $run resumable  upload $(mbps "$up") MB/s   download $(mbps "$down") MB/s"
done
