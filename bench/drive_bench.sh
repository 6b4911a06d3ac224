#!/usr/bin/env bash
# drive_bench.sh — vectur's Drive client against raw curl, side by side in
# one run against one Drive emulator on 127.0.0.1:
#   1. upload SIZE bytes: drivectl put (resumable, default 8 MiB chunks, and
#      64 MiB chunks) vs curl (one resumable session, one PUT of it all);
#   2. download it back: drivectl get vs curl alt=media;
#   3. the number of list requests drivectl needs for a folder of 10,000.
# Prints MB/s and the ratio drivectl/curl (target >= 0.8).
#
# usage: bench/drive_bench.sh [SIZE_MiB]   (default 1024)
# env:   VECTUR_BIN (default <repo>/bin), BENCH_DIR (default a temp dir),
#        ROUNDS (runs per transfer, best counts; default 2)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VECTUR_BIN:-$REPO/bin}
DRIVECTL=$BIN/tools/drivectl
EMULATOR=$REPO/tests/emulator/drive-emulator
SIZE_MIB=${1:-1024}
SIZE=$((SIZE_MIB * 1024 * 1024))
PY=${PYTHON:-/usr/bin/python3}

[ -x "$DRIVECTL" ] || { echo "drive_bench: build first (make): no $DRIVECTL" >&2; exit 1; }
[ -e "$EMULATOR" ] || { echo "drive_bench: no emulator at $EMULATOR" >&2; exit 1; }

WORK=${BENCH_DIR:-$(mktemp -d /tmp/vectur-drive-bench.XXXXXX)}
mkdir -p "$WORK"
EMU_PID=
cleanup() {
	[ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null
	[ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"
	true
}
trap cleanup EXIT

# ---- the emulator ---------------------------------------------------------
mkfifo "$WORK/url.fifo"
"$PY" "$EMULATOR" --listen 127.0.0.1:0 --data-dir "$WORK/emu" >"$WORK/url.fifo" 2>"$WORK/emu.log" &
EMU_PID=$!
read -r URL <"$WORK/url.fifo"
URL=${URL%/}
echo "emulator: $URL (pid $EMU_PID)"

cat >"$WORK/rclone.conf" <<EOF
[emu]
type = drive
scope = drive
client_id = bench
client_secret = bench
token = {"access_token":"x","token_type":"Bearer","refresh_token":"test-refresh-token","expiry":"2020-01-01T00:00:00Z"}
EOF
ctl() { "$DRIVECTL" --config "$WORK/rclone.conf" --endpoint "$URL" emu: "$@"; }
stats() { curl -s "$URL/_emu/stats"; }
reset_stats() { curl -s -X POST "$URL/_emu/stats/reset" >/dev/null; }
jget() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
now() { date +%s.%N; }

TOKEN=$(curl -s -d grant_type=refresh_token -d refresh_token=test-refresh-token \
	-d client_id=bench -d client_secret=bench "$URL/token" | jget 'd["access_token"]')
AUTH="Authorization: Bearer $TOKEN"

# ---- the file -------------------------------------------------------------
SRC=$WORK/src.bin
echo "making a ${SIZE_MIB} MiB file ..."
head -c "$SIZE" /dev/urandom >"$SRC"
SRC_MD5=$(md5sum "$SRC" | cut -d' ' -f1)
ctl mkdir bench >/dev/null

# Each transfer runs ROUNDS times, drivectl and curl alternating, after a
# sync; the best time counts (the machine may be busy with other work).
ROUNDS=${ROUNDS:-2}
best=
timed() { # timed CMD... -> sets $best to the fastest of the rounds (s)
	local t0 t1 d
	sync
	t0=$(now)
	"$@"
	t1=$(now)
	d=$("$PY" -c "print($t1 - $t0)")
	if [ -z "$best" ] || "$PY" -c "import sys; sys.exit(not ($d < $best))"; then
		best=$d
	fi
}
mbps() { "$PY" -c "print('%.1f' % ($SIZE / 1048576 / $1))"; }

PARENT=$(ctl stat bench | jget 'd["id"]')
curl_put() {
	local loc
	loc=$(curl -s -D - -o /dev/null -X POST -H "$AUTH" -H "Content-Type: application/json" \
		-H "X-Upload-Content-Length: $SIZE" \
		-d "{\"name\":\"curl.bin\",\"parents\":[\"$PARENT\"]}" \
		"$URL/upload/drive/v3/files?uploadType=resumable" |
		tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
	curl -s -o "$WORK/curl-put.json" -X PUT -H "$AUTH" -H "Expect:" \
		-H "Content-Range: bytes 0-$((SIZE - 1))/$SIZE" -T "$SRC" "$loc"
}
ctl_put() { ctl put "$SRC" "bench/ctl$1.bin" "${@:2}" >"$WORK/put.json"; }
ctl_get() { rm -f "$WORK/out.bin"; ctl get bench/ctl.bin "$WORK/out.bin" >/dev/null; }
curl_get() { rm -f "$WORK/out.bin"; curl -s -H "$AUTH" -o "$WORK/out.bin" "$URL/drive/v3/files/$CURL_ID?alt=media"; }

UP_CTL=() UP_CTL64=() UP_CURL=() DOWN_CTL=() DOWN_CURL=()
for _ in $(seq "$ROUNDS"); do
	best=; timed curl_put; UP_CURL+=("$best")
	best=; timed ctl_put ""; UP_CTL+=("$best")
	[ "$(jget 'd["md5"]' <"$WORK/put.json")" = "$SRC_MD5" ] || { echo "md5 mismatch (drivectl)" >&2; exit 1; }
	best=; timed ctl_put 64 --chunk-size 64M; UP_CTL64+=("$best")
done
CURL_ID=$(jget 'd["id"]' <"$WORK/curl-put.json")
for _ in $(seq "$ROUNDS"); do
	best=; timed ctl_get; DOWN_CTL+=("$best")
	[ "$(md5sum "$WORK/out.bin" | cut -d' ' -f1)" = "$SRC_MD5" ] || { echo "download md5 mismatch" >&2; exit 1; }
	best=; timed curl_get; DOWN_CURL+=("$best")
done
rm -f "$WORK/out.bin"
fastest() { printf '%s\n' "$@" | sort -g | head -1; }

row() { # label drivectl-times... -- curl-times...
	local label=$1 c u
	shift
	c=$(fastest $1)
	u=$(fastest $2)
	printf '%-34s %10s %10s %8s\n' "$label" "$(mbps "$c")" "$(mbps "$u")" \
		"$("$PY" -c "print('%.2f' % ($u / $c))")"
}
echo
printf '%-34s %10s %10s %8s\n' "transfer (${SIZE_MIB} MiB, best of $ROUNDS)" "drivectl" "curl" "ratio"
row "upload, 8 MiB chunks (default)" "${UP_CTL[*]}" "${UP_CURL[*]}"
row "upload, 64 MiB chunks" "${UP_CTL64[*]}" "${UP_CURL[*]}"
row "download" "${DOWN_CTL[*]}" "${DOWN_CURL[*]}"
echo "(MB/s = MiB/s; ratio = drivectl/curl, target >= 0.80)"

# ---- listing 10,000 entries -------------------------------------------------
ctl mkdir bench/many >/dev/null
MANY=$(ctl stat bench/many | jget 'd["id"]')
echo
echo "creating 10,000 entries ..."
"$PY" - "$URL" "$TOKEN" "$MANY" <<'EOF'
import concurrent.futures, http.client, json, sys, urllib.parse
url, token, parent = sys.argv[1:4]
u = urllib.parse.urlsplit(url)
def work(part):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    for i in part:
        body = json.dumps({"name": "e%05d" % i, "parents": [parent]})
        c.request("POST", "/drive/v3/files?fields=id", body=body,
                  headers={"Authorization": "Bearer " + token,
                           "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
    c.close()
with concurrent.futures.ThreadPoolExecutor(8) as ex:
    list(ex.map(work, [range(k, 10000, 8) for k in range(8)]))
EOF
reset_stats
ctl stat bench/many >/dev/null
WALK=$(stats | jget 'd["requests"].get("list", 0)')
reset_stats
t0=$(now)
N=$(ctl ls bench/many | wc -l)
t1=$(now)
LISTS=$(stats | jget 'd["requests"].get("list", 0)')
echo "listing $N entries: $((LISTS - WALK)) list requests for the folder" \
	"(+$WALK for the path walk), $("$PY" -c "print('%.2f' % ($t1 - $t0))") s"
