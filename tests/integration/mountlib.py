"""mountlib.py — helpers for vectur-mount's durability tests
(test_mount_durability.py) and the torture soak (tests/soak/mount_torture.py).

Standard library only. A `Mount` is one `vectur-mount -f` child on its own
directory; it is ended by PID (SIGKILL in `kill9`, which then lazily
unmounts the dead mount with `fusermount3 -u -z`). `DriveView` is a snapshot
of the emulator's records (`/_emu/files`, `/_emu/versions`) seen as paths
under one test folder. `Torture` runs the kill -9 rounds: a writer process
writes and closes files in the mount and journals every content it closed
(md5 recorded *after* close returned: "C"; recorded just before close: "M",
a maybe); the mount is SIGKILLed at random points, remounted on the same
cache dir, and at the end `check()` compares the journal with every version
Drive ever stored."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
VM = os.path.join(BIN, "vectur-mount")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
FOLDER_MIME = "application/vnd.google-apps.folder"
MD5_EMPTY = hashlib.md5(b"").hexdigest()

TOKEN = {
    "access_token": "x",
    "token_type": "Bearer",
    "refresh_token": "test-refresh-token",
    "expiry": "2000-01-01T00:00:00Z",
}


def can_run():
    """(ok, reason) for the skip markers."""
    if os.geteuid() != 0:
        return False, "FUSE mounts need root here"
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse"
    if not os.access(VM, os.X_OK):
        return False, "vectur-mount not built"
    return True, ""


def md5(b):
    return hashlib.md5(b).hexdigest()


def wait_for(pred, timeout=30, what="condition", interval=0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def write_config(path, token=TOKEN):
    with open(path, "w") as f:
        f.write("[gdrive]\ntype = drive\nscope = drive\ntoken = %s\n" % json.dumps(token))
    return str(path)


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def in_mount_table(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


# ---- mounts -------------------------------------------------------------------

class Mount:
    """One `vectur-mount -f` child on its own directory and Drive folder."""

    def __init__(self, emu, tmp, folder=None, name="code", cache="cache",
                 opts="write_back=0.2,poll_interval=1,drain_timeout=30", env=None):
        self.emu = emu
        self.tmp = str(tmp)
        self.conf = write_config(os.path.join(self.tmp, "rclone-%s.conf" % name))
        self.mnt = os.path.join(self.tmp, name)
        os.makedirs(self.mnt, exist_ok=True)
        self.cache = os.path.join(self.tmp, cache)
        self.folder = folder or "t-" + uuid.uuid4().hex[:10]
        self.base_opts = opts
        self.proc = None
        self.log = os.path.join(self.tmp, "mount-%s.log" % name)
        self.env = dict(os.environ)
        self.env.pop("RCLONE_CONFIG", None)
        self.env.update(env or {})

    def p(self, rel=""):
        return os.path.join(self.mnt, rel)

    def opts(self, cache=None, extra=""):
        o = "endpoint=%s,cache_dir=%s" % (self.emu.url, cache or self.cache)
        if self.base_opts:
            o += "," + self.base_opts
        return o + ("," + extra if extra else "")

    def argv(self, *args, cache=None, extra=""):
        return [VM, "--config", self.conf, "-o", self.opts(cache, extra)] + list(args)

    def start(self, cache=None, extra="", timeout=60):
        with open(self.log, "ab") as logf:
            logf.write(("==== %s start %s\n" % (time.strftime("%H:%M:%S"), extra)).encode())
            logf.flush()
            self.proc = subprocess.Popen(
                self.argv("-f", "gdrive:" + self.folder, self.mnt, cache=cache, extra=extra),
                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env)
        self.cur_cache = cache or self.cache

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("vectur-mount exited %d:\n%s\n--- cache log:\n%s" % (
                    self.proc.returncode, tail(self.log), self.cache_log()))
            return os.path.ismount(self.mnt)
        wait_for(up, timeout, "the mount at " + self.mnt, interval=0.02)
        return self

    def stop(self, timeout=90):
        """Unmounts (fusermount3 -u) and waits for the process to drain and exit."""
        if self.proc is None:
            return None
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self.proc = None
        self._lazy_unmount()
        return rc

    def kill9(self, unmount=True):
        """SIGKILL of the mount process, then a lazy unmount of the dead mount.
        With unmount=False the dead mount stays in place (every access gets
        ENOTCONN) until the caller has stopped whatever was writing through
        it: after a lazy unmount, a path opened by a writer still running
        reaches the directory underneath, and a file "closed" there never
        went through vectur (the torture once took that for a lost file)."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None
        if unmount:
            self._lazy_unmount()

    def _lazy_unmount(self):
        # os.path.ismount() says False for a dead FUSE mount (ENOTCONN):
        # ask the mount table.
        if in_mount_table(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)
        wait_for(lambda: not in_mount_table(self.mnt), 10, "the lazy unmount")

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if in_mount_table(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

    def status(self):
        with open(self.p(".vectur/status")) as f:
            return json.load(f)

    def sync(self, timeout=120):
        return subprocess.run([VM, "--sync", self.mnt], capture_output=True, text=True,
                              timeout=timeout)

    def logtext(self):
        return tail(self.log, 1 << 20)

    def cache_log(self, cache=None):
        return tail(os.path.join(cache or getattr(self, "cur_cache", self.cache),
                                 "vectur-mount.log"), 6000)

    def diag(self):
        return "--- mount stderr (%s):\n%s\n--- CACHE_DIR/vectur-mount.log:\n%s" % (
            self.log, tail(self.log, 2500), self.cache_log())


@contextlib.contextmanager
def mount_factory(emu, tmp):
    """make(**kw) -> a new Mount on `emu` under `tmp` (the `mounts` fixture
    of the test modules); every one is cleaned up, and the emulator's faults
    cleared, on the way out."""
    made = []

    def make(**kw):
        m = Mount(emu, tmp, **kw)
        made.append(m)
        return m
    try:
        yield make
    finally:
        try:
            if emu.proc is not None:
                emu.clear_faults()
        finally:
            for m in made:
                m.cleanup()


# ---- the Drive side -------------------------------------------------------------

class DriveView:
    """The emulator's records (every file, trashed and deleted ones too, and
    every stored version) under the test folder `folder` in Drive's root."""

    def __init__(self, emu, folder):
        self.emu = emu
        self.root = emu.info()["root_id"]
        self.files = emu.files()
        self.byid = {f["id"]: f for f in self.files}
        self.vers = {f["id"]: f.get("versions", []) for f in emu.versions()["files"]}
        self.tops = [f for f in self.files if self.live(f) and f["name"] == folder
                     and self.root in (f.get("parents") or [])]
        self.top_ids = {f["id"] for f in self.tops}

    @staticmethod
    def live(f):
        return not f.get("trashed") and not f.get("deleted")

    def path_of(self, fid):
        """Path of a file relative to the test folder, or None if outside it."""
        parts = []
        seen = set()
        while fid not in self.top_ids:
            f = self.byid.get(fid)
            if f is None or fid in seen or not f.get("parents"):
                return None
            seen.add(fid)
            parts.append(f["name"])
            fid = f["parents"][0]
        return "/".join(reversed(parts))

    def under_top(self):
        """Every file (live or not) under the test folder: [(relpath, File)]."""
        out = []
        for f in self.files:
            p = self.path_of(f["id"])
            if p:
                out.append((p, f))
        return out

    def live_files(self):
        """relpath -> [File] of live non-folders whose ancestors are live."""
        out = {}
        for p, f in self.under_top():
            if f.get("mimeType") == FOLDER_MIME or not self.live(f):
                continue
            if not self._ancestors_live(f):
                continue
            out.setdefault(p, []).append(f)
        return out

    def _ancestors_live(self, f):
        fid = (f.get("parents") or [None])[0]
        while fid and fid not in self.top_ids:
            g = self.byid.get(fid)
            if g is None or not self.live(g):
                return False
            fid = (g.get("parents") or [None])[0]
        return True

    def duplicates(self):
        """[(parent path, name, count)] for every folder holding one name twice
        among live entries (the test folder itself in the root included)."""
        count = {}
        for f in self.files:
            if not self.live(f):
                continue
            for par in f.get("parents") or []:
                count.setdefault((par, f["name"]), []).append(f["id"])
        out = []
        for (par, name), ids in count.items():
            if len(ids) < 2:
                continue
            if par == self.root and name not in {t["name"] for t in self.tops}:
                continue
            if par != self.root and self.path_of(par) is None and par not in self.top_ids:
                continue  # another test folder's business
            where = "<root>" if par == self.root else (
                "<top>" if par in self.top_ids else self.path_of(par))
            out.append((where, name, len(ids)))
        return out

    def versions_of(self, fid):
        return self.vers.get(fid, [])

    def current_md5(self, f):
        return f.get("md5Checksum")


# ---- the kill -9 torture ----------------------------------------------------------

WRITER = r'''
import hashlib, os, random, sys, time
root, journal, seed, nnames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Optional: SIGKILL this pid (the mount) right after the N-th close returned.
kill_after, kill_pid = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (0, 0)
rnd = random.Random(seed)
jfd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

def log(kind, rel, digest, size):
    os.write(jfd, ("%s %s %s %d %d\n" % (kind, rel, digest, size, seed)).encode())

names = ["runs/kt/d%d/f%02d.bin" % (i % 3, i) for i in range(nnames)]
# Each name has a usual size class (a "checkpoint" stays big); 1 in 6
# writes picks another class.
CLASSES = [(0, 0), (1, 8192), (900000, 1200000), (9000000, 11500000)]
usual = {n: random.Random("%s" % n).choices(range(4), weights=[1, 5, 4, 2])[0] for n in names}
dirs_done = set()
n = 0
while True:
    rel = rnd.choice(names)
    cls = usual[rel] if rnd.random() > 1 / 6 else rnd.randrange(4)
    lo, hi = CLASSES[cls]
    size = rnd.randint(lo, hi)
    head = ("%d:%d:%s\n" % (seed, n, rel)).encode()
    data = (head + rnd.randbytes(max(0, size - len(head))))[:size]
    n += 1
    path = os.path.join(root, rel)
    d = os.path.dirname(path)
    if d not in dirs_done:
        os.makedirs(d, exist_ok=True)
        dirs_done.add(d)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    step = rnd.choice([65536, 262144, 1 << 20])
    # 1 write in 5 fsyncs part-way (a checkpoint made durable, then more
    # written): "S" before the fsync, "F" once it returned — that prefix is
    # then on Drive, or something newer.
    cut = rnd.randint(0, len(data)) if data and rnd.random() < 0.2 else -1
    for off in range(0, len(data), step):
        if off <= cut < off + step:
            os.write(fd, data[off:cut])
            pre = hashlib.md5(data[:cut]).hexdigest()
            log("S", rel, pre, cut)
            os.fsync(fd)
            log("F", rel, pre, cut)
            os.write(fd, data[cut:off + step])
        else:
            os.write(fd, data[off:off + step])
    digest = hashlib.md5(data).hexdigest()
    log("M", rel, digest, len(data))
    os.close(fd)
    log("C", rel, digest, len(data))
    if kill_after and n >= kill_after:
        os.kill(kill_pid, 9)
        os.write(jfd, ("K %s - 0 %d\n" % (rel, seed)).encode())
        sys.exit(0)
    if rnd.random() < 0.3:
        time.sleep(rnd.uniform(0, 0.08))
'''


def read_journal(path):
    """path -> [(state, md5, size)], one per version in write order: state
    "M" (written, close not known to have returned), "C" (close returned),
    "C!" (close returned and the writer SIGKILLed the mount right then),
    "S" (a prefix being fsynced) or "F" (its fsync returned)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 5 or parts[0] not in ("M", "C", "K", "S", "F"):
                continue  # a torn last line of a killed writer
            kind, rel, digest, size, _seed = parts
            ws = out.setdefault(rel, [])
            if kind in ("M", "S"):
                ws.append((kind, digest, int(size)))
            elif kind == "F" and ws and ws[-1][0] == "S" and ws[-1][1] == digest:
                ws[-1] = ("F", digest, int(size))
            elif kind == "C" and ws and ws[-1][0] == "M" and ws[-1][1] == digest:
                ws[-1] = ("C", digest, int(size))
            elif kind == "K" and ws and ws[-1][0] == "C":
                ws[-1] = ("C!",) + ws[-1][1:]
    return out


DURABLE = ("C", "C!", "F")  # a close or an fsync returned


def last_durable(entries):
    """Index of the last version whose close or fsync returned, or None."""
    return max((i for i, e in enumerate(entries) if e[0] in DURABLE), default=None)


def check_journal(view, journal):
    """Problems (strings) between the writer's journal and Drive's records:
    a closed (or fsynced) file missing or with an older content; any stored
    version whose md5 is not a content the writer closed, fsynced (or was
    closing or fsyncing) for that path; duplicate names; files nobody
    wrote."""
    problems = []
    live = view.live_files()
    for rel, entries in sorted(journal.items()):
        last_c = last_durable(entries)
        hits = live.get(rel, [])
        if last_c is None:
            allowed = {e[1] for e in entries}
            if hits and hits[0].get("md5Checksum") not in allowed:
                problems.append("%s: never closed, but on Drive with md5 %s (size %s)" % (
                    rel, hits[0].get("md5Checksum"), hits[0].get("size")))
            continue
        allowed = {e[1] for e in entries[last_c:]}
        note = (" [the mount was SIGKILLed right after this close returned]"
                if entries[last_c][0] == "C!" else "")
        if not hits:
            problems.append("%s: closed (last md5 %s, %d bytes, write %d of %d) but not on "
                            "Drive%s" % (rel, entries[last_c][1], entries[last_c][2],
                                         last_c + 1, len(entries), note))
            continue
        got = hits[0].get("md5Checksum")
        if got not in allowed:
            older = [i for i, e in enumerate(entries) if e[1] == got]
            problems.append(
                "%s: Drive has md5 %s (size %s) = %s; last closed or fsynced is write %d of %d "
                "(md5 %s, %d bytes)%s" % (
                    rel, got, hits[0].get("size"),
                    ("an OLDER write #%d" % (older[-1] + 1)) if older else "no write at all",
                    last_c + 1, len(entries), entries[last_c][1], entries[last_c][2], note))
    nversions = 0
    for rel, f in view.under_top():
        if f.get("mimeType") == FOLDER_MIME:
            continue
        allowed = {e[1] for e in journal.get(rel, [])}
        sizes = {e[2] for e in journal.get(rel, [])}
        for i, v in enumerate(view.versions_of(f["id"])):
            nversions += 1
            if v.get("md5") not in allowed:
                problems.append(
                    "%s (id %s) version %d: md5 %s size %s is no content ever written there "
                    "(%s)" % (rel, f["id"], i, v.get("md5"), v.get("size"),
                              "size matches a write: MIXED" if int(v.get("size") or -1) in sizes
                              else "TORN/other size"))
    for where, name, cnt in view.duplicates():
        problems.append("duplicate on Drive: %d live entries named %r in %s" % (cnt, name, where))
    return problems, nversions


class Torture:
    """kill -9 rounds against one Mount (same cache dir every round)."""

    def __init__(self, mount, rng, nnames=24, log=print):
        self.m = mount
        self.rng = rng
        self.nnames = nnames
        self.journal = os.path.join(mount.tmp, "journal.txt")
        self.writer_log = os.path.join(mount.tmp, "writer.log")
        self.writer_py = os.path.join(mount.tmp, "writer.py")
        with open(self.writer_py, "w") as f:
            f.write(WRITER)
        self.log = log
        self.stats = {"rounds": 0, "kills_uploading": 0, "kills_queued": 0,
                      "kills_startup": 0, "kills_after_close": 0,
                      "checked_after_remount": 0}
        self.problems = []
        self.reported = set()

    def round(self, delay, kill_after=0):
        """Mount, write for `delay` s, read the status, SIGKILL the mount
        then the writer, lazily unmount. With kill_after=N the writer
        itself SIGKILLs the mount the moment its N-th close returned."""
        m = self.m
        t0 = time.monotonic()
        m.start(extra=self.extra)
        self.verify_through_mount()
        seed = self.rng.randrange(1 << 30)
        argv = [PYTHON, self.writer_py, m.mnt, self.journal, str(seed), str(self.nnames)]
        if kill_after:
            argv += [str(kill_after), str(m.proc.pid)]
        with open(self.writer_log, "ab") as wl:
            writer = subprocess.Popen(argv, stdout=wl, stderr=wl, stdin=subprocess.DEVNULL)
        try:
            if kill_after:
                try:
                    writer.wait(60)
                except subprocess.TimeoutExpired:
                    raise AssertionError("the writer did not get to close %d files in 60 s" %
                                         kill_after)
                if writer.returncode != 0:
                    raise AssertionError("the writer failed while the mount was alive:\n%s\n%s"
                                         % (tail(self.writer_log), m.diag()))
                m.proc.wait(10)
                m.kill9()
                self.stats["rounds"] += 1
                self.stats["kills_after_close"] += 1
                return None
            end = t0 + delay
            while time.monotonic() < end:
                if writer.poll() is not None:
                    raise AssertionError(
                        "the writer failed while the mount was alive (round %d):\n%s\n%s" % (
                            self.stats["rounds"], tail(self.writer_log), m.diag()))
                time.sleep(min(0.02, max(0, end - time.monotonic())))
            st = None
            if delay > 0.3:
                try:
                    st = m.status()
                except (OSError, ValueError):
                    st = None
            if writer.poll() is not None:
                raise AssertionError("the writer failed while the mount was alive:\n%s\n%s" % (
                    tail(self.writer_log), m.diag()))
            m.kill9(unmount=False)  # the writer first, then the unmount
        finally:
            if writer.poll() is None:
                os.kill(writer.pid, signal.SIGKILL)
            writer.wait(30)
            m.kill9()
            m._lazy_unmount()
        self.stats["rounds"] += 1
        if st is None:
            self.stats["kills_startup"] += 1
        else:
            if st.get("uploading"):
                self.stats["kills_uploading"] += 1
            if st.get("queue_files"):
                self.stats["kills_queued"] += 1
        return st

    def verify_through_mount(self):
        """Right after a remount on the same cache dir (before the writer
        runs again): every path whose close returned reads back through
        the mount as its last closed content (or the one being closed
        after it)."""
        journal = read_journal(self.journal)
        for rel, entries in sorted(journal.items()):
            last_c = last_durable(entries)
            if last_c is None:
                continue
            allowed = {e[1] for e in entries[last_c:]}
            try:
                with open(self.m.p(rel), "rb") as f:
                    got = md5(f.read())
            except OSError as e:
                got = "error %s" % e
            self.stats["checked_after_remount"] += 1
            key = (rel, last_c, got)
            if got not in allowed and key not in self.reported:
                self.reported.add(key)
                older = [i for i, e in enumerate(entries) if e[1] == got]
                self.problems.append(
                    "after remount %d: %s reads back as %s; last closed or fsynced is write %d of %d "
                    "(md5 %s, %d bytes)%s" % (
                        self.stats["rounds"], rel,
                        ("OLDER write #%d" % (older[-1] + 1)) if older else got,
                        last_c + 1, len(entries), entries[last_c][1], entries[last_c][2],
                        " [the mount was SIGKILLed right after this close returned]"
                        if entries[last_c][0] == "C!" else ""))

    def run(self, rounds, extra="", max_delay=3.0):
        self.extra = extra
        for r in range(rounds):
            x = self.rng.random()
            if x < 0.25:
                # by the writer, the instant a close returned
                n = self.rng.randint(1, 25)
                self.round(0, kill_after=n)
                self.log("round %d: killed by the writer right after close #%d" % (r + 1, n))
                continue
            if x < 0.37:
                delay = self.rng.uniform(0.0, 0.3)     # during recovery / first uploads
            else:
                delay = self.rng.uniform(0.3, max_delay)
            st = self.round(delay)
            self.log("round %d: killed after %.2fs%s" % (
                r + 1, delay, "" if st is None else " (queue %s files, uploading %s)" % (
                    st.get("queue_files"), st.get("uploading"))))

    def finish(self, sync_timeout=180):
        """Remount the same cache dir without faults, --sync, unmount, and
        compare. Returns (problems, summary dict)."""
        m = self.m
        m.emu.clear_faults()
        m.start()
        self.verify_through_mount()
        t0 = time.monotonic()
        r = m.sync(timeout=sync_timeout)
        sync_s = time.monotonic() - t0
        problems = list(self.problems)
        if r.returncode != 0:
            problems.append("vectur-mount --sync exited %d: %s %s" % (
                r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        rc = m.stop()
        if rc != 0:
            problems.append("the final unmount exited %s" % rc)
        journal = read_journal(self.journal)
        view = DriveView(m.emu, m.folder)
        p2, nversions = check_journal(view, journal)
        problems += p2
        closed = sum(1 for es in journal.values() for e in es if e[0] in ("C", "C!"))
        fsynced = sum(1 for es in journal.values() for e in es if e[0] == "F")
        maybe = sum(1 for es in journal.values() for e in es if e[0] in ("M", "S"))
        summary = dict(self.stats, paths=len(journal), closed=closed, fsynced=fsynced, maybe=maybe,
                       drive_versions=nversions, final_sync_s=round(sync_s, 1))
        return problems, summary
