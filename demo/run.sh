#!/usr/bin/env bash
# demo/run.sh — `make demo`: a preemptible instance dies in the middle of a
# training stage and nothing is lost. Needs no account: Google Drive is played
# by the local emulator (tests/emulator/drive-emulator).
#
# What it does, in a temp dir that it removes at the end (also on failure):
#   1. starts the Drive emulator and writes an rclone config for it (an expired
#      access token plus the refresh token `test-refresh-token`);
#   2. copies demo/example (train.py, eval.py, a work graph) into two code dirs,
#      "instance A" and "instance B", and mounts Drive over each with
#      vectur-mount (separate cache dirs, like two machines);
#   3. publishes the work graph to Drive and runs `vectur-sched --wait` on both;
#   4. once B is several steps into a training stage, kill -9's B's scheduler,
#      its stage and its mount at once (a simulated preemption), then brings B
#      back: remount with the same cache dir, restart the worker;
#   5. waits for the graph to complete and checks, on "Drive" itself, that
#      every stage is done, that the interrupted training resumed from its
#      checkpoint, that both final checkpoints are bit-for-bit what an
#      uninterrupted run gives, that the evaluations scored exactly the files
#      on Drive, and that no torn checkpoint version ever reached Drive.
# Exit status 0 only if all of that held.
#
# Environment: VECTUR_BIN (default <repo>/bin), VECTUR_DEMO_KEEP=1 keeps the
# temp dir, DEMO_STEP_SECONDS (compute per training step, default 0.6; with
# write_back=0.5 Drive then trails the training by about one checkpoint).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${VECTUR_BIN:-$REPO/bin}
MOUNT_BIN=$BIN/vectur-mount
SCHED_BIN=$BIN/vectur-sched
EMULATOR=$REPO/tests/emulator/drive-emulator
EXAMPLE=$REPO/demo/example
CHECK=$REPO/demo/check.py
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
FOLDER=vectur-demo
STEPS=24
KILL_AT_STEP=7
export DEMO_STEP_SECONDS=${DEMO_STEP_SECONDS:-0.6}
MOUNT_OPTS="write_back=0.5,poll_interval=2,lock_ttl=10,drain_timeout=30"

START_NS=$(date +%s%N)
WORK=""
EMU_PID=""
declare -A MOUNT_PID=() WORKER_PID=()
MOUNTED=()
STAGE_PGIDS=()
FAILED_CHECKS=0

# ---- output ------------------------------------------------------------------

stamp() {
	local ms=$((($(date +%s%N) - START_NS) / 1000000))
	printf '[%3d.%01ds]' $((ms / 1000)) $((ms % 1000 / 100))
}
say() { printf '%s %s\n' "$(stamp)" "$*"; }
note() { printf '          %s\n' "$*"; }
die() {
	printf '%s FAILED: %s\n' "$(stamp)" "$*" >&2
	exit 1
}
check() { # check "what" command...: one line per proof, counted
	local what=$1
	shift
	if "$@"; then
		printf '  ok   %s\n' "$what"
	else
		printf '  FAIL %s\n' "$what"
		FAILED_CHECKS=$((FAILED_CHECKS + 1))
	fi
}

# ---- cleanup: our own PIDs, our own mounts, our temp dir ---------------------

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() { # stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS
	local pid=$1 secs=$2 i
	alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	alive "$pid" && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true
}

is_mounted() { grep -qs " $1 fuse" /proc/self/mounts; }

cleanup() {
	local rc=$? name dir pg f
	trap - EXIT INT TERM
	set +e
	for name in "${!WORKER_PID[@]}"; do stop_pid "${WORKER_PID[$name]}" 5; done
	for pg in "${STAGE_PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
	for dir in "${MOUNTED[@]}"; do
		is_mounted "$dir" && { fusermount3 -u "$dir" 2>/dev/null || fusermount3 -uz "$dir" 2>/dev/null; }
	done
	for name in "${!MOUNT_PID[@]}"; do stop_pid "${MOUNT_PID[$name]}" 20; done
	stop_pid "$EMU_PID" 5
	if [ "$rc" -ne 0 ] && [ -n "$WORK" ] && [ -d "$WORK" ]; then
		echo "---- last lines of the logs (in $WORK) ----" >&2
		for f in "$WORK"/*.log "$WORK"/*/*.log; do
			[ -f "$f" ] || continue
			echo "== ${f#"$WORK"/}" >&2
			tail -n 15 "$f" >&2
		done
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "${VECTUR_DEMO_KEEP:-0}" = 1 ]; then
			echo "(kept $WORK)" >&2
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers -----------------------------------------------------------------

wait_until() { # wait_until SECONDS "what" command...
	local secs=$1 what=$2 end
	shift 2
	end=$(($(date +%s) + secs))
	until "$@"; do
		[ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
		sleep 0.2
	done
}

mount_instance() { # mount_instance NAME: vectur-mount -f in the background
	local name=$1 dir=$WORK/$1
	"$MOUNT_BIN" -f --config "$WORK/rclone.conf" \
		-o "endpoint=$URL,cache_dir=$dir/cache,$MOUNT_OPTS" \
		"gdrive:$FOLDER" "$dir/code" >>"$dir/mount.log" 2>&1 &
	MOUNT_PID[$name]=$!
	MOUNTED+=("$dir/code")
	wait_until 30 "the mount of instance $name" mount_ready "$name"
}

mount_ready() {
	alive "${MOUNT_PID[$1]}" || die "vectur-mount of instance $1 exited; see its log"
	[ -r "$WORK/$1/code/.vectur/status" ]
}

start_worker() { # start_worker NAME: vectur-sched --wait in the code dir
	local name=$1 dir=$WORK/$1
	(cd "$dir/code" && exec "$SCHED_BIN" --wait --poll 1 --grace 3) >>"$dir/worker.log" 2>&1 &
	WORKER_PID[$name]=$!
}

# The stage a worker is on: the last "stage ID: attempt N:" line of its log.
current_stage_of() { # current_stage_of LOG
	sed -n 's/^vectur-sched\[[0-9]*\]: stage \([^ :]*\): attempt [0-9]*: .*/\1/p' "$1" | tail -n 1
}

# "stage X attempt N: resumes from step K" for every resume in the workers' logs.
resumes() {
	awk '/^vectur-sched\[[0-9]+\]: stage [^ :]+: attempt [0-9]+: / { st = $3; sub(":", "", st) }
	     /resumes from checkpoint/ { sub(/^train: /, ""); print "stage " st ": " $0 }' "$@"
}

ckpt_step() { # ckpt_step FILE: the step a checkpoint holds (0 if unreadable)
	"$PY" -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["step"])
except Exception: print(0)' "$1" 2>/dev/null || echo 0
}

# Drive's side, read from the emulator's control endpoints (not through a mount).
drive_ckpt_step() { # drive_ckpt_step STAGE: step of runs/STAGE/ckpt.json on Drive
	"$PY" "$CHECK" step "$URL" "$FOLDER" "$1" 2>/dev/null || echo "?"
}

b_is_deep_in_training() {
	alive "${WORKER_PID[B]}" || die "instance B's worker exited early (rc: see worker.log)"
	B_STAGE=$(current_stage_of "$WORK/B/worker.log")
	case "$B_STAGE" in train_*) ;; *) return 1 ;; esac
	B_STEP=$(ckpt_step "$WORK/B/code/runs/$B_STAGE/ckpt.json")
	[ "$B_STEP" -ge "$KILL_AT_STEP" ]
}

graph_visible_on() { [ -s "$WORK/$1/code/experiments/work_graph.json" ]; }

# ---- 0. preflight ------------------------------------------------------------

for f in "$MOUNT_BIN" "$SCHED_BIN"; do
	[ -x "$f" ] || die "$f is not built (run make first)"
done
[ -x "$EMULATOR" ] || die "$EMULATOR missing"
[ -e /dev/fuse ] || die "/dev/fuse is missing: FUSE is needed (in a container: --device /dev/fuse --cap-add SYS_ADMIN)"
command -v fusermount3 >/dev/null || die "fusermount3 not found (Debian: apt-get install fuse3)"
command -v pgrep >/dev/null || die "pgrep not found (Debian: apt-get install procps)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vectur-demo.XXXXXX")
echo "== vectur demo: a preemptible instance dies mid-training; nothing is lost"
echo

# ---- 1. "Google Drive" ---------------------------------------------------------

mkdir -p "$WORK/drive"
"$PY" "$EMULATOR" --listen 127.0.0.1:0 --data-dir "$WORK/drive" --quiet \
	>"$WORK/emulator.out" 2>"$WORK/emulator.log" &
EMU_PID=$!
emulator_up() {
	alive "$EMU_PID" || die "the Drive emulator exited; see emulator.log"
	[ -n "$(head -n 1 "$WORK/emulator.out")" ]
}
wait_until 20 "the Drive emulator" emulator_up
URL=$(head -n 1 "$WORK/emulator.out")
# What `rclone config` writes after the browser login, with an expired access
# token: vectur refreshes it on its own with the refresh token, as with Google.
cat >"$WORK/rclone.conf" <<'EOF'
[gdrive]
type = drive
scope = drive
token = {"access_token":"expired","token_type":"Bearer","refresh_token":"test-refresh-token","expiry":"2000-01-01T00:00:00Z"}
EOF
chmod 600 "$WORK/rclone.conf"
say "\"Google Drive\" is a local emulator at $URL (no account needed)"

# ---- 2. two instances ------------------------------------------------------------

for name in A B; do
	mkdir -p "$WORK/$name"
	cp -R "$EXAMPLE" "$WORK/$name/code"
	rm -f "$WORK/$name/code/experiments/work_graph.json" # the graph lives on Drive
	mount_instance "$name"
done
say "instances A and B: each mounted gdrive:$FOLDER over its own copy of the code"
note "(train.py and eval.py stay local; runs/**, locks/** and the work graph live on"
note " Drive, through a write-back cache in each instance's own cache dir)"

cp "$EXAMPLE/experiments/work_graph.json" "$WORK/A/code/experiments/work_graph.json"
"$MOUNT_BIN" --sync "$WORK/A/code" >>"$WORK/A/sync.log" 2>&1 || die "vectur-mount --sync failed"
wait_until 30 "instance B to see the graph" graph_visible_on B
(cd "$WORK/A/code" && "$SCHED_BIN" validate >/dev/null) || die "the work graph does not validate"
say "A published experiments/work_graph.json to Drive; B sees it too:"
note "train_a, train_b ($STEPS steps each, a checkpoint after every step),"
note "eval_a, eval_b, then a report"

# ---- 3. two workers ---------------------------------------------------------------

start_worker A
start_worker B
PID_A=${WORKER_PID[A]} PID_B1=${WORKER_PID[B]}
say "both run \`vectur-sched --wait\`: each claims a ready stage under a lock on Drive"

B_STAGE="" B_STEP=0
wait_until 90 "instance B to be $KILL_AT_STEP steps into a training stage" b_is_deep_in_training
KILLED_STAGE=$B_STAGE

# ---- 4. preemption ----------------------------------------------------------------

# Everything of instance B dies at once: the scheduler, its stage's process
# group (python3 train.py) and the mount with its write-back cache.
mapfile -t kids < <(pgrep -P "${WORKER_PID[B]}" || true)
victims=("${MOUNT_PID[B]}" "${WORKER_PID[B]}")
for k in "${kids[@]}"; do
	pg=$(ps -o pgid= -p "$k" | tr -d ' ')
	if [ -n "$pg" ] && [ "$pg" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]; then
		victims+=("-$pg")
		STAGE_PGIDS+=("$pg")
	else
		victims+=("$k")
	fi
done
# (the braces keep bash's "Killed" job notices off the terminal)
{
	kill -KILL -- "${victims[@]}"
	wait "${WORKER_PID[B]}"
	wait "${MOUNT_PID[B]}"
} 2>/dev/null || true
unset 'WORKER_PID[B]' 'MOUNT_PID[B]'
LAST_PRINTED=$(grep -o "train: step *[0-9]*" "$WORK/B/worker.log" | tail -n 1 | grep -o '[0-9]*$' || echo 0)
fusermount3 -uz "$WORK/B/code" 2>/dev/null || true # the dead mount's leftover
DRIVE_STEP_AT_KILL=$(drive_ckpt_step "$KILLED_STAGE")
say "PREEMPTION: kill -9 of instance B (scheduler, train.py and the mount) during $KILLED_STAGE"
note "train.py had saved its checkpoint at step $LAST_PRINTED; Drive's copy at this instant: step $DRIVE_STEP_AT_KILL"
note "(checkpoints closed but not yet uploaded wait in B's cache dir, not in memory)"

sleep 2

# ---- 5. the instance comes back -------------------------------------------------------

mount_instance B
"$MOUNT_BIN" --sync "$WORK/B/code" >>"$WORK/B/sync.log" 2>&1 || die "vectur-mount --sync on B failed"
DRIVE_STEP_AFTER=$(drive_ckpt_step "$KILLED_STAGE")
CACHE_STEP=$(ckpt_step "$WORK/B/code/runs/$KILLED_STAGE/ckpt.json")
say "instance B is back: remounted with the same cache dir; Drive now has step $DRIVE_STEP_AFTER"
start_worker B
PID_B2=${WORKER_PID[B]}
say "B runs \`vectur-sched --wait\` again; the lost claim on $KILLED_STAGE is reclaimed"

wait_done() {
	local name
	for name in A B; do
		alive "${WORKER_PID[$name]}" && return 1
	done
	return 0
}
wait_until 180 "the graph to complete" wait_done
RC_A=0 RC_B=0
wait "${WORKER_PID[A]}" || RC_A=$?
wait "${WORKER_PID[B]}" || RC_B=$?
unset 'WORKER_PID[A]' 'WORKER_PID[B]'
say "both workers finished (exit $RC_A and $RC_B; 0 = graph complete)"
resumes "$WORK/A/worker.log" "$WORK/B/worker.log" | sed 's/^/          /'
note "(owners below: A is vectur-sched pid $PID_A; B was pid $PID_B1, then pid $PID_B2)"
echo
(cd "$WORK/A/code" && "$SCHED_BIN" status) | sed 's/^/    /'
echo

# ---- 6. proof ------------------------------------------------------------------------

# Reference: the same trainings run uninterrupted, locally, without a mount.
mkdir -p "$WORK/ref"
cp -R "$EXAMPLE" "$WORK/ref/code"
for s in a:1 b:2; do
	(cd "$WORK/ref/code" && DEMO_STEP_SECONDS=0 "$PY" train.py --seed "${s#*:}" --steps "$STEPS" \
		--out "runs/train_${s%%:*}" >/dev/null)
done

# Everything else is checked on Drive's side (the emulator), and through A's mount.
PROOF_RC=0
"$PY" "$CHECK" proof "$URL" "$FOLDER" "$WORK/A/code" "$WORK/ref/code" "$KILLED_STAGE" \
	>"$WORK/proof.out" 2>"$WORK/proof.log" || PROOF_RC=$?
say "checks (on Drive, through the emulator, and read back through the mount):"
while IFS=$'\t' read -r verdict what; do
	check "$what" [ "$verdict" = ok ]
done <"$WORK/proof.out"
check "the checks ran to the end" [ "$PROOF_RC" -eq 0 ]
drive_had_last_ckpt() {
	[[ $DRIVE_STEP_AFTER =~ ^[0-9]+$ ]] && [ "$DRIVE_STEP_AFTER" = "$CACHE_STEP" ] &&
		[ "$DRIVE_STEP_AFTER" -ge "$LAST_PRINTED" ]
}
check "after the remount, Drive had the last checkpoint B closed before the kill (step $DRIVE_STEP_AFTER; B's cache: $CACHE_STEP; last printed: $LAST_PRINTED)" \
	drive_had_last_ckpt
RESUMED_AT=$(resumes "$WORK/A/worker.log" "$WORK/B/worker.log" |
	sed -n "s/^stage $KILLED_STAGE: attempt 2 resumes from checkpoint at step \([0-9]*\)\/.*/\1/p" | head -n 1)
check "attempt 2 of $KILLED_STAGE resumed exactly there (step ${RESUMED_AT:-?})" [ "${RESUMED_AT:-x}" = "$DRIVE_STEP_AFTER" ]
check "instance A's worker says the graph is complete (exit 0)" [ "$RC_A" -eq 0 ]
check "instance B's worker says the graph is complete (exit 0)" [ "$RC_B" -eq 0 ]

# ---- 7. unmount: the queue drains before the mounts go away ------------------------

for name in A B; do
	fusermount3 -u "$WORK/$name/code" || die "unmount of instance $name failed"
done
for name in A B; do
	stop_pid "${MOUNT_PID[$name]}" 40
	unset 'MOUNT_PID[$name]'
done
MOUNTED=()
ELAPSED=$((($(date +%s%N) - START_NS) / 1000000000))
echo
if [ "$FAILED_CHECKS" -ne 0 ]; then
	say "$FAILED_CHECKS check(s) failed: the demo did NOT prove its point (${ELAPSED}s)"
	exit 1
fi
cat <<EOF
$(stamp) done in ${ELAPSED}s. What this showed:
  - Two instances shared one work graph on Drive, coordinated only by lock files
    on Drive: each stage ran once, except the one whose machine was killed, which
    was claimed again once its owner was known to be dead.
  - The kill -9 took the mount with it, yet every checkpoint closed before it
    reached Drive: vectur's write-back cache is on disk, and the next mount with
    the same cache dir uploaded what was still queued.
  - The interrupted training resumed from step $RESUMED_AT, not from zero, and ended
    bit-for-bit where an uninterrupted run ends; Drive never held a torn checkpoint.
  - train.py and eval.py are plain Python with open()/os.replace(): no Drive code,
    no lock code. On a real instance: vectur-mount gdrive:PROJECT /workspace/code,
    then vectur-sched --wait (see mount-helpers/).
EOF
