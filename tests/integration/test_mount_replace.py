"""test_mount_replace.py — os.replace(tmp, target) over a file that is on
Drive: at every moment Drive has exactly one complete file at the target
path (the old content until the new one is there), never zero, never two;
and after kill -9 of the mount at any step, the next mount converges to the
last replaced content without duplicates or leftover temp files.

A sampler thread reads the emulator's own records (/_emu/files) in a tight
loop while the test replaces the work graph (experiments/**, so that its
temp file is persisted too) and a checkpoint under runs/ many times, in
three ways: a temp file renamed at once (never uploaded), one fsynced
first (on Drive under its temp name), and one left for longer than
write_back (usually uploaded). Uploads are slowed down so that replaces
also land while the previous content is still uploading."""

import contextlib
import os
import random
import signal
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mountlib import DriveView, can_run, md5, mount_factory  # noqa: E402

_ok, _why = can_run()
pytestmark = pytest.mark.skipif(not _ok, reason=_why)

FOLDER_MIME = "application/vnd.google-apps.folder"
TARGETS = ["experiments/work_graph.json", "runs/r1/ckpt.pt"]
OPTS = ("write_back=0.2,poll_interval=1,drain_timeout=30,chunk_size=256K,"
        "persist=runs/**,persist=experiments/**,persist=locks/**")


@pytest.fixture
def mounts(emulator, tmp_path):
    with mount_factory(emulator, tmp_path) as make:
        yield make


def live_at(files, root_id, folder, rel):
    """The live files at folder/rel in one /_emu/files snapshot (every
    parent folder of that name counts, should one be doubled)."""
    live = [f for f in files if not f.get("trashed") and not f.get("deleted")]
    kids = {}
    for f in live:
        for p in f.get("parents") or []:
            kids.setdefault(p, []).append(f)
    level = [f for f in kids.get(root_id, []) if f["name"] == folder]
    parts = rel.split("/")
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        level = [f for d in level for f in kids.get(d["id"], [])
                 if f["name"] == name and (f.get("mimeType") == FOLDER_MIME) != last]
    return level


class Sampler(threading.Thread):
    """Reads /_emu/files in a tight loop; records every sample in which a
    target does not hold exactly one file with a content written there."""

    def __init__(self, emu, folder, allowed):
        super().__init__(daemon=True)
        self.emu = emu
        self.folder = folder
        self.root = emu.info()["root_id"]
        self.allowed = allowed      # rel -> set of md5 ever replaced in (grows)
        self.stop = threading.Event()
        self.samples = 0
        self.bad = []               # the first 50 bad samples
        self.nbad = {}              # "0 files" / "2 files" / "other content" -> count
        self.bad_ok = set()         # targets not watched

    def run(self):
        while not self.stop.is_set():
            try:
                files = self.emu.files()
            except Exception as e:  # the emulator is never restarted here
                self.bad.append("sample failed: %r" % e)
                return
            t = time.monotonic()
            self.samples += 1
            for rel in TARGETS:
                if rel in self.bad_ok:
                    continue
                hits = live_at(files, self.root, self.folder, rel)
                md5s = [f.get("md5Checksum") for f in hits]
                if len(hits) != 1 or md5s[0] not in self.allowed[rel]:
                    kind = ("%d files" % len(hits)) if len(hits) != 1 else "other content"
                    self.nbad[kind] = self.nbad.get(kind, 0) + 1
                    if len(self.bad) < 50:
                        self.bad.append("t=%.3f %s: %d live file(s) %s" % (
                            t, rel, len(hits), md5s))

    def finish(self):
        self.stop.set()
        self.join(30)


def content(rel, i, rnd):
    if rel.endswith(".json"):
        body = '{"version": 1, "round": %d, "stages": [%s]}\n' % (
            i, ",".join('{"id": "s%d"}' % k for k in range(rnd.randint(1, 400))))
        return body.encode()
    # A checkpoint: small ones go in one multipart request, bigger ones
    # in 256 KiB resumable chunks.
    return ("%d:" % i).encode() + os.urandom(rnd.choice([50_000, 700_000, 1_500_000]))


def write(path, data, fsync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_round(m, rel, i, rnd, journal, allowed):
    """One temp-file write and os.replace onto rel; journal[rel] gets
    ("R", md5) before the replace and ("D", md5) once it returned."""
    data = content(rel, i, rnd)
    tmp = m.p(rel + ".tmp")
    how = rnd.choice(["at once", "fsynced", "waited"])
    write(tmp, data, fsync=how == "fsynced")
    if how == "waited":
        time.sleep(rnd.uniform(0.25, 0.8))     # past write_back: uploading or up
    allowed[rel].add(md5(data))
    journal[rel].append(("R", md5(data)))
    os.replace(tmp, m.p(rel))
    journal[rel].append(("D", md5(data)))
    return how


def setup_targets(m, rnd, journal, allowed):
    os.makedirs(m.p("experiments"), exist_ok=True)
    os.makedirs(m.p("runs/r1"), exist_ok=True)
    for rel in TARGETS:
        data = content(rel, 0, rnd)
        write(m.p(rel), data)
        allowed[rel].add(md5(data))
        journal[rel].append(("D", md5(data)))
    r = m.sync()
    assert r.returncode == 0, r.stderr + m.diag()


@contextlib.contextmanager
def replacing(m, emu, seed):
    """Both targets on Drive, uploads slowed down (a replace often comes
    while the previous one uploads) and the sampler running while the
    body replaces; then a sync and a last look."""
    rnd = random.Random(int(os.environ.get("VECTUR_REPLACE_SEED", seed)))
    journal = {rel: [] for rel in TARGETS}
    allowed = {rel: set() for rel in TARGETS}
    setup_targets(m, rnd, journal, allowed)
    emu.set_faults({"bandwidth": 4_000_000, "latency_ms": 3})
    sampler = Sampler(emu, m.folder, allowed)
    sampler.start()
    try:
        yield rnd, journal, allowed, sampler
        r = m.sync(timeout=240)
        assert r.returncode == 0, r.stderr + m.diag()
        time.sleep(0.5)
    finally:
        sampler.finish()
        emu.clear_faults()


def assert_no_bad_sample(sampler, m):
    assert sampler.samples >= 20, "the sampler hardly ran"
    assert not sampler.bad, "bad samples %s, first ones:\n%s\n%s" % (
        sampler.nbad, "\n".join(sampler.bad[:20]), m.diag())


def final_check(m, emu, journal, allowed):
    """Remount-independent end state: the last returned replace (or one in
    flight after it) is on Drive, alone, with no temp file left over."""
    view = DriveView(emu, m.folder)
    live = view.live_files()
    problems = []
    for rel in TARGETS:
        entries = journal[rel]
        last = max(i for i, e in enumerate(entries) if e[0] == "D")
        ok = {e[1] for e in entries[last:]}
        hits = live.get(rel, [])
        if len(hits) != 1 or hits[0].get("md5Checksum") not in ok:
            problems.append("%s: Drive has %s, want one of %s" % (
                rel, [h.get("md5Checksum") for h in hits], sorted(ok)))
        for f in [f for p, f in view.under_top() if p == rel]:
            for v in view.versions_of(f["id"]):
                if v["md5"] not in allowed[rel]:
                    problems.append("%s: stored version %s was never written" % (rel, v))
    leftovers = sorted(p for p in live if p.endswith(".tmp"))
    if leftovers:
        problems.append("temp files left on Drive: %s" % leftovers)
    dups = view.duplicates()
    if dups:
        problems.append("duplicates on Drive: %s" % dups)
    return problems


def test_replace_over_a_file_on_drive_never_leaves_the_path_empty_or_doubled(
        mounts, emulator):
    m = mounts(opts=OPTS).start()
    hows = {}
    with replacing(m, emulator, "7") as (rnd, journal, allowed, sampler):
        for i in range(1, 41):
            rel = TARGETS[i % 2]
            how = replace_round(m, rel, i, rnd, journal, allowed)
            hows[how] = hows.get(how, 0) + 1
            if rnd.random() < 0.3:
                time.sleep(rnd.uniform(0, 0.5))
    print("rounds by kind: %s; %d samples of Drive" % (hows, sampler.samples))
    assert_no_bad_sample(sampler, m)
    problems = final_check(m, emulator, journal, allowed)
    assert not problems, "\n".join(problems) + "\n" + m.diag()
    for rel in TARGETS:
        with open(m.p(rel), "rb") as f:
            assert md5(f.read()) == journal[rel][-1][1], rel
        assert not os.path.exists(m.p(rel + ".tmp"))


def test_replace_with_kill9_of_the_mount_at_any_step_converges_without_gaps(
        mounts, emulator):
    """The same replaces while the mount is SIGKILLed at random moments and
    mounted again on the same cache dir: Drive never has zero or two files
    at a target, and ends with the last replaced content."""
    m = mounts(opts=OPTS).start()
    kills = busy_kills = 0
    with replacing(m, emulator, "11") as (rnd, journal, allowed, sampler):
        for cycle in range(8):
            if m.proc is None:
                m.start()
            errors = []
            stop = threading.Event()

            def writer():
                i = 1000 * (cycle + 1)
                try:
                    while not stop.is_set():
                        i += 1
                        replace_round(m, TARGETS[i % 2], i, rnd, journal, allowed)
                except OSError as e:
                    errors.append(e)
            t = threading.Thread(target=writer, daemon=True)
            t.start()
            time.sleep(rnd.uniform(0.2, 2.5))
            try:
                st = m.status()
                busy_kills += bool(st.get("queue_files") or st.get("uploading"))
            except (OSError, ValueError):
                pass
            os.kill(m.proc.pid, signal.SIGKILL)
            kills += 1
            stop.set()
            m.kill9()
            t.join(60)
            assert not t.is_alive(), "the writer hung after the kill"
        m.start()
        for rel in TARGETS:   # a temp file the last kill left unrenamed
            if os.path.exists(m.p(rel + ".tmp")):
                os.unlink(m.p(rel + ".tmp"))
    done = sum(1 for es in journal.values() for e in es if e[0] == "D")
    print("%d kills (%d with uploads queued or running), %d replaces returned, "
          "%d samples of Drive" % (kills, busy_kills, done, sampler.samples))
    assert_no_bad_sample(sampler, m)
    problems = final_check(m, emulator, journal, allowed)
    assert not problems, "\n".join(problems) + "\n" + m.diag()
    assert busy_kills >= 1, "no kill came while something was queued or uploading"
    for rel in TARGETS:
        entries = journal[rel]
        last = max(i for i, e in enumerate(entries) if e[0] == "D")
        with open(m.p(rel), "rb") as f:
            assert md5(f.read()) in {e[1] for e in entries[last:]}, rel


def test_replace_with_a_source_that_is_only_on_drive_fetches_it_first(mounts, emulator):
    """The source was written by another instance (here: a mount with an
    empty cache): its bytes are fetched, then sent into the target's Drive
    file; the source's own Drive file goes after that."""
    m = mounts(opts=OPTS).start()
    os.makedirs(m.p("runs/r1"))
    old, new = os.urandom(900_000), os.urandom(1_300_000)
    write(m.p("runs/r1/ckpt.pt"), old)
    write(m.p("runs/r1/new.pt"), new)
    assert m.sync().returncode == 0
    m.stop()
    m.start(cache=os.path.join(m.tmp, "cache-empty"))
    allowed = {rel: set() for rel in TARGETS}
    allowed["runs/r1/ckpt.pt"] = {md5(old), md5(new)}
    emulator.set_faults({"bandwidth": 4_000_000})
    sampler = Sampler(emulator, m.folder, allowed)
    sampler.bad_ok = {"experiments/work_graph.json"}
    sampler.start()
    try:
        os.replace(m.p("runs/r1/new.pt"), m.p("runs/r1/ckpt.pt"))
        assert open(m.p("runs/r1/ckpt.pt"), "rb").read() == new
        assert not os.path.exists(m.p("runs/r1/new.pt"))
        assert m.sync(timeout=120).returncode == 0
    finally:
        sampler.finish()
        emulator.clear_faults()
    assert_no_bad_sample(sampler, m)
    live = DriveView(emulator, m.folder).live_files()
    assert [f["md5Checksum"] for f in live.get("runs/r1/ckpt.pt", [])] == [md5(new)], live
    assert "runs/r1/new.pt" not in live, live
