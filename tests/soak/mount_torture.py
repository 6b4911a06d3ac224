#!/usr/bin/env python3
"""mount_torture.py — the long version of the kill -9 torture in
tests/integration/test_mount_durability.py, for `make soak`.

    tests/soak/mount_torture.py [ROUNDS] [--seed N] [--keep] [--bin DIR]

ROUNDS (default 200) times: mount vectur-mount on the same cache dir, let a
writer write and close files of 0 B .. 11.5 MB (rewriting the same 24 names)
in runs/, SIGKILL the mount at a random point (during recovery, mid-upload,
or — one round in four — by the writer itself the instant a close returned),
kill the writer, `fusermount3 -u -z`. Drive is the emulator capped at
24 MB/s, write_back=0 and 2 MiB resumable chunks, so uploads are in flight.
Then a last mount on the same cache dir runs `vectur-mount --sync`, and
every file whose close returned must be on Drive with its last closed
content, every version the emulator ever stored must be a content the
writer closed (or was closing) for that path, and no folder may hold a
name twice. Prints one summary line (and the problems); exit 0 if none.
Needs root and /dev/fuse. Standard library only."""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TESTS, "integration"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rounds", nargs="?", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--bin", help="directory holding vectur-mount (default $VECTUR_BIN or bin/)")
    ap.add_argument("--max-delay", type=float, default=3.0)
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    if args.bin:
        os.environ["VECTUR_BIN"] = os.path.abspath(args.bin)

    from conftest import Emulator  # noqa: E402  (needs sys.path above)
    import mountlib  # noqa: E402

    ok, why = mountlib.can_run()
    if not ok:
        print("mount_torture: cannot run: %s" % why, file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    tmp = tempfile.mkdtemp(prefix="vectur-soak-")
    emu = Emulator(os.path.join(tmp, "emu")).start()
    m = mountlib.Mount(emu, tmp, opts="write_back=0,poll_interval=1,chunk_size=2M,"
                                      "drain_timeout=30")
    t0 = time.monotonic()
    problems, summary = [], {}
    log = print if args.verbose else (lambda *a: None)
    try:
        emu.set_faults({"bandwidth": 24_000_000, "latency_ms": 5})
        t = mountlib.Torture(m, random.Random(seed), log=log)
        try:
            t.run(args.rounds, max_delay=args.max_delay)
        except AssertionError as e:
            problems.append("round %d: %s" % (t.stats["rounds"] + 1, e))
        if not problems:
            problems, summary = t.finish()
        else:
            summary = dict(t.stats)
    finally:
        m.cleanup()
        emu.stop()
    summary.update(seed=seed, elapsed_s=round(time.monotonic() - t0, 1),
                   problems=len(problems))
    for p in problems[:100]:
        print("PROBLEM:", p)
    if problems:
        print(m.diag()[-3000:])
    print("mount_torture: %s rounds=%d closed=%s maybe=%s kills_uploading=%s "
          "kills_after_close=%s drive_versions=%s problems=%d seed=%d elapsed=%.0fs %s" % (
              "FAIL" if problems else "OK", summary.get("rounds", 0), summary.get("closed"),
              summary.get("maybe"), summary.get("kills_uploading"),
              summary.get("kills_after_close"), summary.get("drive_versions"),
              len(problems), seed, summary["elapsed_s"], json.dumps(summary)))
    if args.keep or problems:
        print("mount_torture: files kept in", tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
