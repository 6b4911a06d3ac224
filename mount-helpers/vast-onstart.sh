#!/usr/bin/env bash
# vast-onstart.sh — Vast.ai "on-start script" for vectur: every time the
# instance starts (first boot, and again after a preemption), mount the Drive
# state over the code dir and run the scheduler's worker loop in a tmux session
# named vectur_sched. Idempotent: does nothing if the session already runs.
#
# In the Vast template's on-start box:   bash /usr/local/share/vectur/vast-onstart.sh
# (installed there by `make install`, which `vectur-setup --install` runs), or
# paste this file.
#
# Configuration, all through environment variables (Vast: the template's
# "-e VAR=value" docker options, or the account's environment variables):
#   VECTUR_REMOTE       Drive folder to mount, REMOTE:PATH (default
#                       gdrive:vectur/<basename of VECTUR_CODE_DIR>, as vectur-setup --launch)
#   VECTUR_CODE_DIR     code dir to mount over (default /workspace/vectur/code)
#   VECTUR_GIT_URL      if the code dir is missing or empty: git clone this into it
#   VECTUR_GIT_REF      branch/tag to check out after cloning (optional)
#   VECTUR_CACHE_DIR    write-back cache; keep it on the instance's disk so that
#                       what was queued at a preemption is uploaded on the next
#                       start (default /workspace/.vectur-cache)
#   VECTUR_MOUNT_OPTS   extra -o options, e.g. write_back=2,poll_interval=10
#   VECTUR_SCHED_ARGS   extra vectur-sched arguments, e.g. "--poll 30"
#   VECTUR_ON_DONE      command run when the graph is complete (vectur-sched
#                       exit 0), e.g. a `vastai stop instance $CONTAINER_ID`
#   VECTUR_LOG          this script's log (default /var/log/vectur-onstart.log)
# Drive credentials, one of:
#   - an rclone.conf on the instance (vectur-setup --rclone HOST), or RCLONE_CONFIG;
#   - rclone's variables, e.g. for a service account on a shared drive:
#       RCLONE_CONFIG_GDRIVE_TYPE=drive
#       RCLONE_CONFIG_GDRIVE_SCOPE=drive
#       RCLONE_CONFIG_GDRIVE_SERVICE_ACCOUNT_CREDENTIALS='{"type":"service_account",...}'
#         (or RCLONE_CONFIG_GDRIVE_SERVICE_ACCOUNT_FILE=/path/key.json)
#       RCLONE_CONFIG_GDRIVE_TEAM_DRIVE=<shared drive id>
#     (the remote name is the part between RCLONE_CONFIG_ and the key, upper case;
#      see mount-helpers/README.md).
set -euo pipefail

if [ "${1:-}" = --worker ] && [ -n "${2:-}" ] && [ -f "$2" ]; then
	# Inside the tmux session: the on-start script's environment (credentials
	# included) comes in a 0600 file, read here before anything else and then
	# removed, so it holds whatever environment the tmux server has.
	# shellcheck disable=SC1090
	. "$2"
	rm -f "$2"
fi

SESSION=vectur_sched
CODE_DIR=${VECTUR_CODE_DIR:-/workspace/vectur/code}
CODE_DIR=${CODE_DIR%/}
REMOTE=${VECTUR_REMOTE:-gdrive:vectur/${CODE_DIR##*/}}
CACHE_DIR=${VECTUR_CACHE_DIR:-/workspace/.vectur-cache}
MOUNT_OPTS=${VECTUR_MOUNT_OPTS:-}
LOG=${VECTUR_LOG:-/var/log/vectur-onstart.log}
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

log() { printf '%s vast-onstart: %s\n' "$(date -u +%FT%TZ)" "$*" | tee -a "$LOG" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ---- inside the tmux session: mount, then the worker loop ----------------------------

worker() {
	local rc=0 opts="cache_dir=$CACHE_DIR${MOUNT_OPTS:+,$MOUNT_OPTS}"
	if mountpoint -q "$CODE_DIR"; then
		log "$CODE_DIR is already mounted"
	else
		log "mounting $REMOTE on $CODE_DIR (-o $opts)"
		vectur-mount -o "$opts" "$REMOTE" "$CODE_DIR" || {
			log "vectur-mount failed (see above); fix it and run: bash $SELF"
			return 1
		}
	fi
	cd "$CODE_DIR" || {
		log "cannot cd to $CODE_DIR"
		return 1
	}
	log "running vectur-sched --wait ${VECTUR_SCHED_ARGS:-}"
	# shellcheck disable=SC2086 # VECTUR_SCHED_ARGS is a list of words
	vectur-sched --wait ${VECTUR_SCHED_ARGS:-} || rc=$?
	case $rc in
	0) log "graph complete" ;;
	5) log "a stage failed for good: vectur-sched status; vectur-sched reset STAGE" ;;
	6) log "interrupted" ;;
	*) log "vectur-sched exited with status $rc" ;;
	esac
	if [ "$rc" -eq 0 ] && [ -n "${VECTUR_ON_DONE:-}" ]; then
		log "running VECTUR_ON_DONE: $VECTUR_ON_DONE"
		vectur-mount --sync "$CODE_DIR" || log "warning: vectur-mount --sync failed"
		sh -c "$VECTUR_ON_DONE" || log "VECTUR_ON_DONE failed"
	fi
	return "$rc"
}

if [ "${1:-}" = --worker ]; then
	worker || true
	# Keep the session: `tmux attach -t vectur_sched` shows what happened.
	exec "${SHELL:-/bin/bash}" -i
fi

# ---- the on-start part ---------------------------------------------------------------

mkdir -p "$(dirname "$LOG")" 2>/dev/null || LOG=/tmp/vectur-onstart.log
touch "$LOG" 2>/dev/null || LOG=/tmp/vectur-onstart.log

for c in vectur-mount vectur-sched; do
	command -v "$c" >/dev/null 2>&1 ||
		die "$c is not installed (from your laptop: vectur-setup --install HOST)"
done
[[ $REMOTE == *:* ]] || die "VECTUR_REMOTE='$REMOTE' is not REMOTE:PATH (e.g. gdrive:vectur/proj)"
[ -e /dev/fuse ] || die "/dev/fuse is missing: this instance cannot mount FUSE file systems"

if [ ! -d "$CODE_DIR" ] || [ -z "$(ls -A "$CODE_DIR" 2>/dev/null)" ]; then
	if [ -n "${VECTUR_GIT_URL:-}" ]; then
		log "cloning $VECTUR_GIT_URL into $CODE_DIR"
		mkdir -p "$(dirname "$CODE_DIR")"
		git clone -q "$VECTUR_GIT_URL" "$CODE_DIR"
		[ -z "${VECTUR_GIT_REF:-}" ] || git -C "$CODE_DIR" checkout -q "$VECTUR_GIT_REF"
	else
		log "warning: $CODE_DIR is empty (set VECTUR_GIT_URL to clone your code there)"
		mkdir -p "$CODE_DIR"
	fi
fi
mkdir -p "$CACHE_DIR"
chmod 700 "$CACHE_DIR"

if ! command -v tmux >/dev/null 2>&1; then
	log "tmux is missing: installing it"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux; } >>"$LOG" 2>&1 ||
		log "could not install tmux"
fi

ENVFILE=$(mktemp "${TMPDIR:-/tmp}/vectur-onstart-env.XXXXXX")
chmod 600 "$ENVFILE"
# Hand our configuration to the session whatever environment its tmux server has.
export VECTUR_REMOTE="$REMOTE" VECTUR_CODE_DIR="$CODE_DIR" VECTUR_CACHE_DIR="$CACHE_DIR" VECTUR_LOG="$LOG"
for v in $(compgen -e); do
	case $v in VECTUR_* | RCLONE_* | PATH | HOME | XDG_*) declare -p "$v" ;; esac
done >"$ENVFILE"

if command -v tmux >/dev/null 2>&1; then
	if tmux has-session -t "$SESSION" 2>/dev/null; then
		rm -f "$ENVFILE"
		log "tmux session $SESSION already runs (tmux attach -t $SESSION)"
		exit 0
	fi
	tmux new-session -d -s "$SESSION" "bash $(printf %q "$SELF") --worker $(printf %q "$ENVFILE")"
	log "started tmux session $SESSION: $REMOTE on $CODE_DIR, vectur-sched --wait (tmux attach -t $SESSION)"
else
	log "no tmux: running the worker in the background, output in $LOG"
	nohup bash "$SELF" --worker "$ENVFILE" >>"$LOG" 2>&1 </dev/null &
fi
