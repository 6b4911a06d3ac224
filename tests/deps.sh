#!/bin/sh
# deps.sh — installs the Debian packages vectur's build and tests need, only
# those missing. Run by `make deps` (a prerequisite of `make test`/`make demo`).
set -eu
PKGS="build-essential pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev
libjson-c-dev libsqlite3-dev libssl-dev python3 python3-pytest
python3-pytest-xdist python3-filelock rclone openssl curl fio hyperfine
shellcheck clang-format
util-linux procps groff-base man-db"
missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	echo "deps: all present"
	exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
