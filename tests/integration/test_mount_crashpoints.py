"""test_mount_crashpoints.py — a crash at every row write of the cache,
through the real mount: what a training script saw completed is what the
next mount shows and what Drive ends with.

test_cache.c and test_cache_drive.c crash the cache API at each of its
SQLite row writes (the cache's `crash_at` hook: the process `_exit(99)`s
instead of running row write N). Here the hook is set through vectur-mount's
test-only `VECTUR_TEST_CRASH_AT=N`, so the fs/ layer is under test too: the
overlay's renames across the local/persisted boundary (cache_import and
cache_export), json.dump to a local tmp file + os.replace onto
experiments/work_graph.json, FLUSH/RELEASE order, fsync, directory renames.

For each N, on a fresh mount dir, cache dir and Drive folder:

1. mount with VECTUR_TEST_CRASH_AT=N and run SCRIPT in a child process,
   which prints the number of each step it completed;
2. if the script ends, `--sync` (still armed: the uploads' row writes are
   crash points too);
3. when the mount exited 99: remount the same cache dir (unarmed) and check
   that the tree through the mount is the one the last completed step left,
   or the one the step under way would have left (SNAPSHOTS: the same script
   run once in a plain directory); `--sync`; check Drive holds exactly the
   persisted part of that tree, no two live entries of one name, and no
   stored version whose content was never closed under some name.

N runs from 1 until a run in which the mount never reached row write N.
`make test` tries every VECTUR_CRASHPOINTS_STEP-th point (default 2; the
two modes start at different offsets), about 20 s a mode;
VECTUR_CRASHPOINTS_ALL=1 (make soak) tries them all (about 130 and 110
points, 50 and 25 s)."""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mountlib import (DriveView, FOLDER_MIME, PYTHON, Mount, can_run,  # noqa: E402
                      md5, tail, wait_for)

_ok, _why = can_run()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)

# What training code does, one step per line; each step is one change a
# caller may rely on once it returned. Run as `SCRIPT ROOT`: prints "K\n"
# after step K completed.
SCRIPT = r'''
import json, os, random, sys
root = sys.argv[1]

def p(rel):
    return os.path.join(root, rel)

def data(tag, size):
    head = ("%s\n" % tag).encode()
    return head + random.Random(tag).randbytes(size - len(head))

def put(rel, b, flags=os.O_TRUNC, sync=False):
    fd = os.open(p(rel), os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, b)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)

def dump(graph):
    with open(p("experiments/tmp"), "w") as f:
        json.dump(graph, f)

STEPS = [
    lambda: os.mkdir(p("runs")),
    lambda: os.mkdir(p("runs/exp")),
    lambda: put("runs/exp/ckpt.pt", data("ckpt-1", 300000)),
    lambda: put("runs/exp/ckpt.pt", data("ckpt-2", 310000)),  # rewrite (O_TRUNC)
    lambda: put("runs/exp/ckpt.pt.tmp", data("ckpt-3", 290000)),
    lambda: os.replace(p("runs/exp/ckpt.pt.tmp"), p("runs/exp/ckpt.pt")),
    lambda: put("runs/exp/train.log", b"epoch 1 loss 0.9\n", os.O_APPEND),
    lambda: put("runs/exp/train.log", b"epoch 2 loss 0.7\n", os.O_APPEND),
    lambda: os.mkdir(p("experiments")),                       # merged: local
    lambda: dump({"stages": {"a": "running"}}),               # local tmp
    lambda: os.replace(p("experiments/tmp"), p("experiments/work_graph.json")),
    lambda: put("runs/exp/metrics.json", b'{"acc": 0.5}', sync=True),
    lambda: dump({"stages": {"a": "done", "b": "running"}}),
    lambda: os.replace(p("experiments/tmp"), p("experiments/work_graph.json")),
    lambda: os.rename(p("runs/exp"), p("runs/exp2")),
    lambda: put("runs/exp2/ckpt.pt", data("ckpt-4", 305000)),
    lambda: put("runs/exp2/train.log", b"epoch 3 loss 0.5\n", os.O_APPEND),
    lambda: os.unlink(p("runs/exp2/metrics.json")),
    lambda: put("runs/exp2/best.pt.tmp", data("best-1", 200000), sync=True),
    lambda: os.replace(p("runs/exp2/best.pt.tmp"), p("runs/exp2/best.pt")),
    lambda: os.rename(p("runs/exp2/train.log"), p("train.log")),  # to local
    lambda: os.mkdir(p("runs/scratch")),
    lambda: os.rmdir(p("runs/scratch")),
]
snap = len(sys.argv) > 2
for k, step in enumerate(STEPS):
    step()
    sys.stdout.write("%d\n" % k)
    sys.stdout.flush()
    if snap:  # the parent takes its snapshot, then lets us go on
        sys.stdin.readline()
'''

PERSISTED = ("runs/", "experiments/work_graph.json")


def tree(root):
    """relpath -> bytes (files) or None (directories) under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        if rel == ".":
            dirs[:] = [x for x in dirs if x != ".vectur"]
        else:
            out[rel] = None
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.normpath(os.path.join(rel, n))] = f.read()
    return out


def persisted(t):
    return {k: v for k, v in t.items()
            if k == "runs" or k.startswith(PERSISTED[0]) or k == PERSISTED[1]}


def show(t):
    return "{%s}" % ", ".join("%s%s" % (k, "/" if v is None else ":" + md5(v)[:8])
                              for k, v in sorted(t.items()))


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """(path of SCRIPT, [tree after step K]) from a run in a plain dir."""
    tmp = tmp_path_factory.mktemp("script")
    path = str(tmp / "script.py")
    with open(path, "w") as f:
        f.write(SCRIPT)
    root = str(tmp / "plain")
    os.mkdir(root)
    proc = subprocess.Popen([PYTHON, path, root, "snap"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    snaps = []
    for line in proc.stdout:
        assert int(line) == len(snaps)
        snaps.append(tree(root))
        proc.stdin.write("\n")
        proc.stdin.flush()
    assert proc.wait() == 0
    return path, snaps


def drive_problems(emu, folder, want, closed):
    """What is wrong on Drive against the tree `want` (persisted part)."""
    view = DriveView(emu, folder)
    problems = ["duplicate on Drive: %d live %r in %s" % (n, name, where)
                for where, name, n in view.duplicates()]
    got = {}
    for rel, f in view.under_top():
        if not view.live(f) or not view._ancestors_live(f):
            continue
        got[rel] = None if f.get("mimeType") == FOLDER_MIME else f.get("md5Checksum")
        if f.get("mimeType") == FOLDER_MIME:
            continue
        for i, v in enumerate(view.versions_of(f["id"])):
            if v.get("md5") not in closed:
                problems.append("%s: stored version %d (md5 %s, %s bytes) was never closed "
                                "under any name: torn or mixed" % (rel, i, v.get("md5"),
                                                                   v.get("size")))
    # A folder of the persisted tree is made on Drive when something goes in.
    want_files = {k: md5(v) for k, v in persisted(want).items() if v is not None}
    got_files = {k: v for k, v in got.items() if v is not None}
    if got_files != want_files:
        problems.append("Drive files %s, want %s" % (
            sorted((k, v[:8]) for k, v in got_files.items()),
            sorted((k, v[:8]) for k, v in want_files.items())))
    # experiments/ is a merged dir: local, and on Drive once it holds
    # work_graph.json (an empty Drive folder of a dir the tree has is fine).
    extra_dirs = {k for k, v in got.items() if v is None} - {
        k for k, v in want.items() if v is None}
    if extra_dirs:
        problems.append("Drive has folders the tree has not: %s" % sorted(extra_dirs))
    return problems


def run_point(emu, tmp, script_path, snaps, closed, mode_opts, n):
    """One crash point. Returns (reached, problems, last step completed)."""
    m = Mount(emu, tmp, name="m%d" % n, cache="c%d" % n, opts=mode_opts,
              env={"VECTUR_TEST_CRASH_AT": str(n), "VECTUR_TEST_SETTLE_MS": "200",
                   "VECTUR_PACER_RATE": "100"})
    try:
        try:
            m.start()
        except AssertionError:
            # Row write N came before the mount was up (the first
            # listing, a feed token): nothing of the script ran.
            if m.proc is None or m.proc.poll() != 99:
                raise
            return True, recheck(emu, m, snaps, closed, -1), -1
        out = os.path.join(str(tmp), "steps-%d.txt" % n)
        with open(out, "w") as so, open(out + ".err", "w") as se:
            child = subprocess.run([PYTHON, script_path, m.mnt], stdout=so, stderr=se,
                                   stdin=subprocess.DEVNULL, timeout=120)
        with open(out) as f:
            done = [int(x) for x in f.read().split()]
        last = done[-1] if done else -1
        if child.returncode == 0:
            r = m.sync(timeout=120)
            if r.returncode != 0:
                # --sync may see the dying mount's fds close before it
                # is a zombie we can reap.
                try:
                    m.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            if m.proc.poll() is None:
                if r.returncode != 0:
                    return False, ["--sync exited %d: %s" % (r.returncode, r.stdout)], last
                try:
                    problems = check_tree(m, snaps, last)
                except OSError:
                    problems = None  # reading counts too (atimes): it came now
                if problems is not None and m.proc.poll() is None:
                    # Row write N never came: the script and its uploads are done.
                    problems += drive_problems(emu, m.folder, snaps[last], closed)
                    return False, problems, last
        try:
            rc = m.proc.wait(30)
        except subprocess.TimeoutExpired:
            return True, ["the script failed with the mount alive:\n%s" % (
                tail(out + ".err"))], last
        if rc != 99:
            return True, ["the mount exited %s, not 99:\n%s" % (rc, m.diag())], last
        return True, recheck(emu, m, snaps, closed, last), last
    finally:
        m.cleanup()


def recheck(emu, m, snaps, closed, last):
    """After the crash: remount unarmed on the same cache dir, check the
    tree, --sync, check the tree and Drive. Returns the problems."""
    m.proc = None
    m._lazy_unmount()
    m.env.pop("VECTUR_TEST_CRASH_AT")
    m.start()
    problems = check_tree(m, snaps, last)
    if problems:
        return problems
    got = tree(m.mnt)
    r = m.sync(timeout=120)
    if r.returncode != 0:
        return ["--sync after the remount exited %d: %s" % (r.returncode, r.stdout)]
    if tree(m.mnt) != got:
        return ["the tree changed during --sync: %s" % show(tree(m.mnt))]
    # Trashing a replaced file's old Drive file may follow --sync.
    try:
        wait_for(lambda: not drive_problems(emu, m.folder, got, closed), 10, "Drive")
    except AssertionError:
        return drive_problems(emu, m.folder, got, closed)
    return []


def check_tree(m, snaps, last):
    """The tree through the mount is snaps[last], or snaps[last + 1] where a
    local file the step under way writes may be any prefix of its content
    (the directory underneath promises nothing for a write cut short; a
    persisted file is whole or not there)."""
    got = tree(m.mnt)
    before = snaps[last] if last >= 0 else {}
    if got == before:
        return []
    if last + 1 < len(snaps):
        after = snaps[last + 1]
        cut = {k for k, v in after.items()
               if v is not None and not persisted({k: v}) and before.get(k) != v
               and k in got and got[k] is not None and v.startswith(got[k])}
        if {k: v for k, v in got.items() if k not in cut} == \
                {k: v for k, v in after.items() if k not in cut}:
            return []
    return ["after step %d the mount shows %s;\n  want %s" % (
        last, show(got), "\n  or ".join(show(t) for t in [before] + snaps[last + 1:last + 2]))]


MODES = {
    # Nothing uploads while the script runs (but fsync): its row writes
    # are the fs/ layer's and come in the same order every run; --sync
    # then uploads under the crash point.
    "quiet": "write_back=60,poll_interval=0,transfers=1,drain_timeout=20",
    # Uploads race the script: renames and rewrites of files on their way.
    "busy": "write_back=0,poll_interval=1,drain_timeout=20",
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_crash_at_any_row_write_of_the_mount_keeps_what_the_script_saw(
        emulator, tmp_path, script, mode):
    script_path, snaps = script
    closed = {md5(v) for t in snaps for v in t.values() if v is not None}
    every = 1 if os.environ.get("VECTUR_CRASHPOINTS_ALL") else int(
        os.environ.get("VECTUR_CRASHPOINTS_STEP", "2"))
    n = 1 + sorted(MODES).index(mode) % every
    # VECTUR_CRASHPOINTS_FIRST=N starts there (to look at one point).
    n = int(os.environ.get("VECTUR_CRASHPOINTS_FIRST", n))
    t0 = time.monotonic()
    report, bad = [], []
    while n < 2000:
        reached, problems, last = run_point(emulator, tmp_path, script_path, snaps,
                                            closed, MODES[mode], n)
        report.append("%d:%d" % (n, last))
        if problems:
            bad.append("crash at row write %d (after step %d of %d):\n%s" % (
                n, last, len(snaps) - 1, "\n".join(problems)))
            if len(bad) >= 8:
                break
        if not reached:
            break
        n += every
    took = time.monotonic() - t0
    print("%s: %d crash points in %.1f s (point:last step) %s" % (
        mode, len(report), took, " ".join(report)))
    assert not bad, "\n\n".join(bad)
    assert not reached, "the script was still crashing at row write %d" % n
    assert len(report) > 5
    print(json.dumps({"mode": mode, "points": len(report), "seconds": round(took, 1)}))
