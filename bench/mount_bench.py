#!/usr/bin/env python3
"""mount_bench.py — the measuring half of bench/mount_bench.sh (stdlib only).

Each subcommand does one timed thing and prints one line (seconds, or a
value); mount_bench.sh calls it once per measurement and keeps the results
as "TARGET METRIC VALUE" lines, which `table` turns into the report.

  write PATH SIZE_MB SEED [fsync]  write SIZE_MB MiB in 1 MiB write()s, then
                                   (fsync and) close; prints seconds
  expect SIZE_MB SEED              md5 of what `write` writes (untimed)
  read PATH                        read it all in 1 MiB read()s; "SECONDS BYTES"
  md5 PATH                         md5 of a file
  create DIR N BYTES               create N files of BYTES each in DIR; seconds
  lsl DIR N                        time `ls -l DIR` (stats each entry); checks
                                   that N entries were listed; seconds
  table RESULTS SIZE_MB N          print the report
"""

import hashlib
import os
import random
import subprocess
import sys
import time

MIB = 1 << 20
PERIOD = 64  # MiB of random data, cycled; blocks differ per SEED


def pattern(seed):
    return random.Random(seed).randbytes(PERIOD * MIB)


def blocks(size_mb, seed):
    buf = memoryview(pattern(seed))
    for i in range(size_mb):
        k = i % PERIOD
        yield buf[k * MIB:(k + 1) * MIB]


def cmd_write(path, size_mb, seed, mode=""):
    size_mb, seed = int(size_mb), int(seed)
    data = list(blocks(size_mb, seed))  # the pattern is made before timing
    t0 = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for b in data:
        n = os.write(fd, b)
        while n < len(b):
            n += os.write(fd, b[n:])
    if mode == "fsync":
        os.fsync(fd)
    os.close(fd)
    print("%.6f" % (time.monotonic() - t0))


def cmd_expect(size_mb, seed):
    h = hashlib.md5()
    for b in blocks(int(size_mb), int(seed)):
        h.update(b)
    print(h.hexdigest())


def cmd_read(path):
    buf = bytearray(MIB)
    total = 0
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    while True:
        n = os.readv(fd, [buf])
        if n == 0:
            break
        total += n
    os.close(fd)
    print("%.6f %d" % (time.monotonic() - t0, total))


def cmd_md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(MIB)
            if not b:
                break
            h.update(b)
    print(h.hexdigest())


def cmd_create(d, n, nbytes):
    n, nbytes = int(n), int(nbytes)
    payload = os.urandom(nbytes)
    names = [os.path.join(d, "f%06d.dat" % i) for i in range(n)]
    t0 = time.monotonic()
    for p in names:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    print("%.6f" % (time.monotonic() - t0))


def cmd_lsl(d, n):
    t0 = time.monotonic()
    p = subprocess.run(["ls", "-l", d], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    lines = [l for l in p.stdout.decode(errors="replace").splitlines()
             if not l.startswith("total ")]
    if p.returncode != 0 or len(lines) != int(n):
        sys.stderr.write("ls -l %s: exit %d, %d entries (want %s): %s\n"
                         % (d, p.returncode, len(lines), n,
                            p.stderr.decode(errors="replace")[:500]))
        sys.exit(1)
    print("%.6f" % dt)


# ---- the report ------------------------------------------------------------

TARGETS = [("local", "local disk"), ("fuse_floor", "FUSE floor"), ("vectur", "vectur-mount"),
           ("rclone_local", "rclone local"), ("rclone_drive", "rclone drive"),
           ("curl", "curl")]


NOTES = []


def load(path):
    r = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "note":
                NOTES.append((parts[0], " ".join(parts[2:])))
            elif len(parts) >= 3:
                r[(parts[0], parts[1])] = " ".join(parts[2:])
    return r


def cmd_table(path, size_mb, n):
    size = int(size_mb) * MIB
    n = int(n)
    r = load(path)

    def val(t, m):
        v = r.get((t, m))
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            return v  # a note, e.g. "skipped"

    def mbps(t, m):
        v = val(t, m)
        return size / v / 1e6 if isinstance(v, float) and v > 0 else v

    # rows: (label, metric, kind) — kind "mb": MB/s from seconds; "s": seconds
    rows = [
        ("seq write %d MiB, until close" % int(size_mb), "write_close", "mb"),
        ("  write until on remote (close + sync)", "sync_after_write", "mb"),
        ("seq write + fsync (vectur: on Drive)", "write_fsync", "mb"),
        ("cold read (uncached, page cache dropped)", "cold_read", "mb"),
        ("  cold read, capped link (see note)", "cold_read_net", "mb"),
        ("warm read (second read)", "warm_read", "mb"),
        ("cached read, page cache dropped", "cache_read", "mb"),
        ("create %d x 1 KiB files (s)" % n, "create", "s"),
        ("  then until all on remote (sync) (s)", "sync_after_create", "s"),
        ("ls -l %d entries (s)" % n, "lsl", "s"),
        ("ls -l again, warm (s)", "lsl_warm", "s"),
        ("ls -l after remount, empty cache (s)", "lsl_remount", "s"),
        ("upload 1 file (resumable, one PUT)", "upload", "mb"),
        ("download (alt=media)", "download", "mb"),
        ("  download, capped link (see note)", "download_net", "mb"),
    ]

    def cell(t, m, kind):
        v = mbps(t, m) if kind == "mb" else val(t, m)
        if v is None:
            return "-"
        if isinstance(v, str):
            return v[:12]
        return "%.0f" % v if kind == "mb" else "%.2f" % v

    # ratios for vectur: (metric, reference target, reference metric, target)
    # speed ratio = vectur speed / reference speed (for seconds: ref/vectur).
    checks = {
        "write_close": ("local", "write_close", 0.7, "x local"),
        "write_fsync": ("curl", "upload", None, "x curl up"),
        "sync_after_write": ("curl", "upload", None, "x curl up"),
        "cold_read": ("curl", "download", 0.8, "x curl down"),
        "cold_read_net": ("curl", "download_net", 0.8, "x curl down"),
        "warm_read": ("local", "warm_read", None, "x local"),
        "cache_read": ("local", "cache_read", None, "x local"),
        "create": ("local", "create", 1 / 3, "x local"),
        "lsl": ("local", "lsl", 1 / 3, "x local"),
        "lsl_warm": ("local", "lsl_warm", None, "x local"),
    }
    w = 40
    cols = [c for c, _ in TARGETS]
    hdr = "%-*s" % (w, "measurement") + "".join("%13s" % name for _, name in TARGETS) \
        + "   vectur ratio"
    print(hdr)
    print("-" * len(hdr) + "-" * 18)
    for label, m, kind in rows:
        cells = [cell(c, m, kind) for c in cols]
        if all(x == "-" for x in cells):
            continue
        line = "%-*s" % (w, label) + "".join("%13s" % x for x in cells)
        if m in checks:
            rt, rm, target, unit = checks[m]
            a, b = val("vectur", m), val(rt, rm)
            if isinstance(a, float) and isinstance(b, float) and a > 0:
                ratio = b / a  # seconds: ref time / vectur time = speed ratio
                line += "   %.2f%s" % (ratio, unit)
                if target is not None:
                    line += " %s (target >= %.2f)" % ("PASS" if ratio >= target else "MISS",
                                                      target)
            f = val("fuse_floor", m)
            if rt == "local" and isinstance(a, float) and isinstance(f, float) and a > 0:
                line += "; %.2fx floor" % (f / a)
        print(line)
    print("MB/s = 10^6 bytes/s of a %d MiB file; (s) rows are seconds; ratio = speed of"
          " vectur / speed of the reference (for (s) rows: reference time / vectur time;"
          " 'within 3x' = ratio >= 0.33)" % int(size_mb))
    for t, v in NOTES:
        print("note [%s]: %s" % (t, v))
    print("FUSE floor = bin/tools/fuse_floor, a bare libfuse passthrough of a local directory"
          " with vectur-mount's kernel settings; 'x floor' = speed of vectur / speed of it.")
    print("notes: vectur runs with write_back=0, 'sync' = vectur-mount --sync; its fsync returns"
          " once the version is on Drive (md5 checked). rclone: sync = rc vfs/stats queue empty"
          " and one 'Copied' log line per closed file; rclone's fsync does not upload, so its"
          " write+fsync row is its local cache. curl and vectur use the same emulator (plain"
          " HTTP); rclone drive uses a second one over TLS on 127.0.0.1:443.")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    fn = globals().get("cmd_" + sys.argv[1])
    if fn is None:
        sys.exit(__doc__)
    fn(*sys.argv[2:])


if __name__ == "__main__":
    main()
