#!/usr/bin/env bash
# run.sh — `make bench`: every benchmark, one after the other, each with its
# baseline side by side in the same run. Results go to stdout and to
# bench/results/<date>.txt; the README quotes them with these commands.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt"
{
	echo "# vectur bench, $(date -u), $(nproc) cores, $(uname -r)"
	echo "## raw HTTP ceiling: curl against the emulator (bench/curl_baseline.sh)"
	RUNS=2 bash bench/curl_baseline.sh
	echo "## Drive client vs curl (bench/drive_bench.sh)"
	ROUNDS=2 bash bench/drive_bench.sh 1024
	echo "## writes by size, and an fsync's time (bench/write_sizes.sh)"
	bash bench/write_sizes.sh
	for b in bench/mount_bench.sh; do
		[ -f "$b" ] || continue
		echo "## $b"
		bash "$b"
	done
} 2>&1 | tee "$out"
echo "bench: results in $out"
