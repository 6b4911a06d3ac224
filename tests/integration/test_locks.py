"""test_locks.py — lock files under locks/** across mounts (DESIGN.md §3
"Locks", issue 5), end to end: several vectur-mount processes with their
own cache dirs on one Drive folder of the emulator.

- O_CREAT|O_EXCL from many processes on three mounts is mutually exclusive
  and a barrier: a counter read and written under the lock never loses an
  update (also with 5% injected faults and name-query lag);
- Python's filelock.SoftFileLock works unchanged across two mounts;
- a kill -9'd holder's lock is taken over within lock_ttl + poll + slack;
- a holder stopped past its TTL finds its lock gone when continued, and
  cannot release the new holder's lock;
- `cat` of a lock shows its holder; mkdir under locks/ is a lock too;
- the requests of one uncontended acquire + release are counted.

Also runs the C protocol tests (build/tests/test_lock) against the emulator,
with and without faults."""

import datetime
import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_mount_basic import Mount, wait_for, VM  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
BUILD = os.path.join(os.path.dirname(BIN.rstrip("/")),
                     "build-san" if BIN.rstrip("/").endswith("-san") else "build")
TEST_LOCK = os.path.join(BUILD, "tests", "test_lock")
PY = "/usr/bin/python3"


def mount_test(fn):
    fn = pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root here")(fn)
    fn = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")(fn)
    return pytest.mark.skipif(not os.access(VM, os.X_OK), reason="vectur-mount not built")(fn)


# Drive's pace (10 requests/s, the client's default) would make 300
# serialised lock cycles take minutes; the emulator takes more.
FAST = {"VECTUR_PACER_RATE": "100"}

FAULTS = {"fail_rate": 0.05,
          "mix_status": [[500, "backendError"], [503, "backendError"],
                         [429, "rateLimitExceeded"], [403, "userRateLimitExceeded"]],
          "name_query_delay": 2.0}


# ---- the C protocol tests ---------------------------------------------------

def run_c_tests(emulator, tmp_path, faults=False):
    conf = tmp_path / "rclone.conf"
    with open(conf, "w") as f:
        f.write('[emu]\ntype = drive\nscope = drive\ntoken = {"access_token":"x",'
                '"token_type":"Bearer","refresh_token":"test-refresh-token",'
                '"expiry":"2000-01-01T00:00:00Z"}\n')
    env = dict(os.environ, VECTUR_TEST_ENDPOINT=emulator.url,
               VECTUR_TEST_RCLONE_CONFIG=str(conf), VECTUR_BACKOFF_BASE_MS="20")
    if faults:
        env["VECTUR_TEST_FAULTS"] = "1"
    r = subprocess.run([TEST_LOCK], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    out = r.stdout.decode("utf-8", "replace")
    print(out)
    assert r.returncode == 0, out
    assert " 0 failed" in out and "skipped" not in out, out


@pytest.mark.skipif(not os.access(TEST_LOCK, os.X_OK), reason="test_lock not built")
def test_lock_protocol_against_emulator(emulator, tmp_path):
    run_c_tests(emulator, tmp_path)


@pytest.mark.skipif(not os.access(TEST_LOCK, os.X_OK), reason="test_lock not built")
def test_lock_protocol_under_faults_and_name_lag(emulator, tmp_path):
    emulator.set_faults(dict(FAULTS, reset_rate=0.02))
    run_c_tests(emulator, tmp_path, faults=True)


# ---- mounts -------------------------------------------------------------------

def start_mounts(emu, tmp_path, n, extra="", env=None):
    folder = "t-" + uuid.uuid4().hex[:10]
    mounts = []
    for i in range(n):
        d = tmp_path / ("m%d" % i)
        d.mkdir()
        m = Mount(emu, d, folder=folder)
        if env:
            m.env.update(env)
        mounts.append(m)
    try:
        for m in mounts:
            m.start(extra=extra)
    except Exception:
        for m in mounts:
            m.cleanup()
        raise
    return mounts


def vsync(m):
    r = subprocess.run([VM, "--sync", m.mnt], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def prepare(mounts, counter=True):
    """locks/ and runs/counter (= 0) made on the first mount, on Drive, and
    visible from every mount."""
    m0 = mounts[0]
    os.makedirs(m0.p("locks"), exist_ok=True)
    os.makedirs(m0.p("runs"), exist_ok=True)
    if counter:
        with open(m0.p("runs/counter"), "w") as f:
            f.write("0")
    vsync(m0)
    for m in mounts[1:]:
        wait_for(lambda: os.path.isdir(m.p("locks")) and
                 (not counter or os.path.exists(m.p("runs/counter"))),
                 30, "locks/ and the counter on " + m.mnt)


WORKER = r'''
import errno, json, os, random, sys, time
mnt, quota, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = os.path.join(mnt, "locks", "counter.lock")
counter = os.path.join(mnt, "runs", "counter")
done = eexist = 0
errors, spans = [], []
deadline = time.time() + float(sys.argv[4])
while done < quota and time.time() < deadline:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        eexist += 1
        time.sleep(random.uniform(0.005, 0.04))
        continue
    except OSError as e:
        errors.append("open: %s" % e)
        time.sleep(0.1)
        continue
    t0 = time.time()
    os.close(fd)
    with open(counter) as f:
        v = int(f.read())
    with open(counter, "w") as f:
        f.write(str(v + 1))
    t1 = time.time()
    try:
        os.unlink(lock)
    except OSError as e:
        errors.append("unlink: %s" % e)
    spans.append((t0, t1, v))
    done += 1
json.dump({"done": done, "eexist": eexist, "errors": errors, "spans": spans},
          open(out, "w"))
'''


def run_workers(mounts, per_mount, quota, tmp_path, budget):
    procs = []
    for i, m in enumerate(mounts):
        for k in range(per_mount):
            out = str(tmp_path / ("w%d-%d.json" % (i, k)))
            procs.append((out, subprocess.Popen(
                [PY, "-c", WORKER, m.mnt, str(quota), out, str(budget)])))
    results = []
    for out, p in procs:
        p.wait(budget + 120)
        with open(out) as f:
            results.append(json.load(f))
    return results


def check_exclusion(results):
    spans = sorted(tuple(s) for r in results for s in r["spans"])
    for a, b in zip(spans, spans[1:]):
        assert b[0] >= a[1], "two holders at once: %r and %r" % (a, b)
    return spans


def check_no_stale_read(spans):
    """Each holder read what the previous one wrote: value i at turn i."""
    for i, s in enumerate(spans):
        assert s[2] == i, "holder %d read %d (stale): %r" % (i, s[2], spans[max(0, i - 2):i + 1])


def read_counter(m):
    with open(m.p("runs/counter")) as f:
        return int(f.read())


def counter_trial(emulator, tmp_path, extra="", env=None, quota=34, budget=150):
    mounts = start_mounts(emulator, tmp_path, 3, extra=extra, env=env)
    try:
        prepare(mounts)
        t0 = time.time()
        results = run_workers(mounts, 3, quota, tmp_path, budget=budget)
        took = time.time() - t0
        total = sum(r["done"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        per_mount = [sum(r["done"] for r in results[i * 3:(i + 1) * 3]) for i in range(3)]
        print("acquisitions %d in %.1fs (per mount %r), EEXIST %d, errors %r" % (
            total, took, per_mount, sum(r["eexist"] for r in results), errors[:5]))
        assert not [e for e in errors if e.startswith("unlink")], errors
        check_no_stale_read(check_exclusion(results))
        vsync(mounts[0])
        assert total >= 9 * quota, total
        # Read back on a mount that did not write last and after a fresh
        # feed read: Drive has every increment.
        for m in mounts:
            wait_for(lambda: read_counter(m) == total, 20,
                     "counter == %d on %s (have %d)" % (total, m.mnt, read_counter(m)))
        return mounts, results
    finally:
        for m in mounts:
            m.cleanup()


@mount_test
def test_three_mounts_counter_under_lock_loses_no_update(emulator, tmp_path):
    counter_trial(emulator, tmp_path, env=FAST)


@mount_test
def test_three_mounts_counter_with_faults_and_name_lag(emulator, tmp_path):
    emulator.set_faults(FAULTS)
    counter_trial(emulator, tmp_path, env=dict(FAST, VECTUR_BACKOFF_BASE_MS="50"))


@mount_test
@pytest.mark.skipif(not os.environ.get("VECTUR_LOCK_SOAK"),
                    reason="soak: VECTUR_LOCK_SOAK=1 (or =faults)")
def test_lock_soak_3000_acquisitions(emulator, tmp_path):
    env = dict(FAST)
    if os.environ["VECTUR_LOCK_SOAK"] == "faults":
        emulator.set_faults(FAULTS)
        env["VECTUR_BACKOFF_BASE_MS"] = "50"
    counter_trial(emulator, tmp_path, env=env, quota=334, budget=1200)
    print("emulator stats", emulator.stats())


FILELOCK_WORKER = r'''
import json, os, sys, time
from filelock import SoftFileLock
mnt, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = SoftFileLock(os.path.join(mnt, "locks", "fl.lock"), timeout=120)
counter = os.path.join(mnt, "runs", "counter")
spans = []
for i in range(n):
    with lock:
        t0 = time.time()
        with open(counter) as f:
            v = int(f.read())
        with open(counter, "w") as f:
            f.write(str(v + 1))
        spans.append((t0, time.time(), v))
json.dump({"done": n, "spans": spans, "errors": [], "eexist": 0}, open(out, "w"))
'''


@mount_test
def test_softfilelock_from_two_mounts_excludes(emulator, tmp_path):
    mounts = start_mounts(emulator, tmp_path, 2)
    try:
        prepare(mounts)
        procs = []
        for i, m in enumerate(mounts):
            for k in range(2):
                out = str(tmp_path / ("fl%d-%d.json" % (i, k)))
                procs.append((out, subprocess.Popen([PY, "-c", FILELOCK_WORKER, m.mnt, "10", out])))
        results = []
        for out, p in procs:
            assert p.wait(240) == 0
            results.append(json.load(open(out)))
        check_no_stale_read(check_exclusion(results))
        vsync(mounts[0])
        vsync(mounts[1])
        for m in mounts:
            wait_for(lambda: read_counter(m) == 40, 20, "counter == 40 on " + m.mnt)
    finally:
        for m in mounts:
            m.cleanup()


def try_lock(path):
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


@mount_test
def test_cat_shows_holder_and_second_mount_gets_eexist(emulator, tmp_path):
    a, b = start_mounts(emulator, tmp_path, 2)
    try:
        prepare([a, b], counter=False)
        assert try_lock(a.p("locks/job.lock"))
        holder = json.loads(open(a.p("locks/job.lock")).read())
        for k in ("host", "pid", "mount_id", "acquired_at"):
            assert k in holder, holder
        assert holder["pid"] == a.proc.pid
        st = json.loads(open(a.p(".vectur/status")).read())
        assert "locks/job.lock" in json.dumps(st.get("locks_held")), st
        assert not try_lock(b.p("locks/job.lock"))
        # The loser now sees the holder, and `cat` says who it is.
        seen = json.loads(wait_for(lambda: os.path.exists(b.p("locks/job.lock")) and
                                   open(b.p("locks/job.lock")).read(), 10, "holder on b"))
        assert seen["mount_id"] == holder["mount_id"]
        # Only the holder may release it.
        with pytest.raises(PermissionError):
            os.unlink(b.p("locks/job.lock"))
        os.unlink(a.p("locks/job.lock"))
        wait_for(lambda: try_lock(b.p("locks/job.lock")), 10, "b takes the lock")
        # mkdir under locks/ is a lock too.
        os.mkdir(a.p("locks/stage.d"))
        with pytest.raises(FileExistsError):
            os.mkdir(b.p("locks/stage.d"))
        with pytest.raises(PermissionError):
            os.rmdir(b.p("locks/stage.d"))
        os.rmdir(a.p("locks/stage.d"))
        os.unlink(b.p("locks/job.lock"))
    finally:
        a.cleanup()
        b.cleanup()


@mount_test
def test_uncontended_acquire_release_request_count(emulator, tmp_path):
    # No background feed polls during the count.
    (a,) = start_mounts(emulator, tmp_path, 1, extra="poll_interval=600")
    try:
        prepare([a], counter=False)
        assert try_lock(a.p("locks/warm.lock"))  # fills the id pool
        os.unlink(a.p("locks/warm.lock"))
        time.sleep(1.5)
        counts = []
        for i in range(3):
            emulator.reset_stats()
            assert try_lock(a.p("locks/count.lock"))
            os.unlink(a.p("locks/count.lock"))
            st = emulator.stats()
            counts.append(st["total"] - st["requests"].get("token", 0))
            print("acquire + release: %d requests %r" % (counts[-1], st["requests"]))
        assert min(counts) <= 5, counts
    finally:
        a.cleanup()


@mount_test
def test_kill9_holder_lock_is_taken_over_within_ttl(emulator, tmp_path):
    ttl, poll = 6, 1
    a, b = start_mounts(emulator, tmp_path, 2, extra="lock_ttl=%d" % ttl)
    try:
        prepare([a, b], counter=False)
        assert try_lock(a.p("locks/k.lock"))
        time.sleep(ttl)  # renewed meanwhile: still held
        assert not try_lock(b.p("locks/k.lock"))
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        a.proc = None
        # A dead FUSE daemon leaves its mount point unusable (ENOTCONN).
        subprocess.run(["fusermount3", "-u", "-z", a.mnt], capture_output=True)
        t0 = time.time()
        wait_for(lambda: try_lock(b.p("locks/k.lock")), ttl + poll + 10, "takeover")
        took = time.time() - t0
        print("kill -9: lock taken over after %.1fs (ttl %d, poll %d)" % (took, ttl, poll))
        assert took <= ttl + poll + 5, took
        os.unlink(b.p("locks/k.lock"))
    finally:
        a.cleanup()
        b.cleanup()


@mount_test
def test_a_held_lock_stays_held_on_a_drive_that_keeps_modified_time_on_a_touch(emulator, tmp_path):
    """Renewals touch the lock's appProperties so that Drive moves its
    modifiedTime; whether Google does that for app-private data is not
    verified. On a Drive that does not, the holder must notice and set
    modifiedTime itself, or another instance takes the lock after a TTL
    while its holder is alive."""
    ttl = 3
    a, b = start_mounts(emulator, tmp_path, 2, extra="lock_ttl=%d" % ttl)
    try:
        prepare([a, b], counter=False)
        emulator.set_faults({"props_keep_modified": True})
        assert try_lock(a.p("locks/m.lock"))
        end = time.time() + 4 * ttl
        while time.time() < end:
            assert not try_lock(b.p("locks/m.lock")), "b took a lock a holds:\n" + a.logtext()
            time.sleep(0.5)
        assert "modifiedTime" in a.logtext(), a.logtext()
        os.unlink(a.p("locks/m.lock"))
        wait_for(lambda: try_lock(b.p("locks/m.lock")), 10, "b takes the released lock")
        os.unlink(b.p("locks/m.lock"))
    finally:
        emulator.clear_faults()
        a.cleanup()
        b.cleanup()


@mount_test
def test_a_lock_s_modified_time_on_drive_is_never_a_local_time(emulator, tmp_path):
    """A lock's modifiedTime on Drive is its lease, judged on Drive's clock.
    `touch -d` on a held lock (or a writer's clock behind Drive's) used to
    send the local time to Drive: other instances' reapers and acquires saw
    a live lock as long expired and deleted it."""
    (a,) = start_mounts(emulator, tmp_path, 1, extra="write_back=0")
    try:
        prepare([a], counter=False)
        assert try_lock(a.p("locks/t.lock"))
        with open(a.p("locks/t.lock"), "a") as f:
            f.write("note\n")  # an upload of the lock file too
        old = time.time() - 3600
        os.utime(a.p("locks/t.lock"), (old, old))
        vsync(a)
        on_drive = [f for f in emulator.files() if f.get("name") == "t.lock"]
        assert len(on_drive) == 1, on_drive
        stamp = datetime.datetime.strptime(on_drive[0]["modifiedTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
        age = time.time() - stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        assert age < 60, "the lock looks %.0f s old on Drive" % age
        assert os.stat(a.p("locks/t.lock")).st_mtime == pytest.approx(old, abs=1)
        os.unlink(a.p("locks/t.lock"))
    finally:
        a.cleanup()


@mount_test
def test_a_lock_release_does_not_push_a_file_another_process_is_writing(emulator, tmp_path):
    """A release pushes this mount's writes to Drive first. It used to
    snapshot every file open for writing, so vectur-sched releasing the
    graph lock while training code was half-way through torch.save put
    half a checkpoint on Drive. Logs (O_APPEND) are still pushed."""
    (a,) = start_mounts(emulator, tmp_path, 1, extra="write_back=600")
    ck = log = None
    try:
        prepare([a], counter=False)
        half = os.urandom(123456)
        ck = open(a.p("runs/half.pt"), "wb")
        ck.write(half)
        ck.flush()
        log = open(a.p("runs/train.log"), "a")
        log.write("epoch 1\n")
        log.flush()
        assert try_lock(a.p("locks/g.lock"))
        os.unlink(a.p("locks/g.lock"))
        names = {f.get("name"): f for f in emulator.files()}
        assert "half.pt" not in names, "half a checkpoint on Drive: %s" % names.get("half.pt")
        assert "train.log" in names, sorted(names)
        ck.write(half)
        ck.close()
        log.close()
        vsync(a)
        sizes = [f.get("size") for f in emulator.files() if f.get("name") == "half.pt"]
        assert sizes == [str(2 * len(half))], sizes
    finally:
        for f in (ck, log):  # an open file keeps the unmount busy
            if f is not None and not f.closed:
                f.close()
        a.cleanup()


@mount_test
def test_holder_stopped_past_ttl_finds_its_lock_gone(emulator, tmp_path):
    ttl = 6
    a, b = start_mounts(emulator, tmp_path, 2, extra="lock_ttl=%d" % ttl)
    try:
        prepare([a, b], counter=False)
        assert try_lock(a.p("locks/s.lock"))
        mine = json.loads(open(a.p("locks/s.lock")).read())["mount_id"]
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: try_lock(b.p("locks/s.lock")), ttl + 15, "takeover from stopped")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        theirs = json.loads(open(b.p("locks/s.lock")).read())["mount_id"]
        assert theirs != mine
        wait_for(lambda: "locks/s.lock lost" in a.logtext(), 10, "the loss logged on a")

        def a_lost():
            try:
                return json.loads(open(a.p("locks/s.lock")).read())["mount_id"] != mine
            except FileNotFoundError:
                return True
        wait_for(a_lost, 10, "a no longer sees its own lock")
        # The stale holder cannot release the new holder's lock.
        with pytest.raises((PermissionError, FileNotFoundError)):
            os.unlink(a.p("locks/s.lock"))
        assert json.loads(open(b.p("locks/s.lock")).read())["mount_id"] == theirs
        os.unlink(b.p("locks/s.lock"))
    finally:
        a.cleanup()
        b.cleanup()


@mount_test
def test_release_that_cannot_push_its_writes_fails_and_lets_the_lease_expire(emulator, tmp_path):
    ttl = 4
    a, b = start_mounts(emulator, tmp_path, 2, extra="lock_ttl=%d" % ttl)
    try:
        prepare([a, b], counter=False)
        assert try_lock(a.p("locks/q.lock"))
        emulator.set_faults({"quota_bytes": 1})  # every upload: storageQuotaExceeded
        with open(a.p("runs/big.bin"), "wb") as f:
            f.write(b"x" * 100000)
        with pytest.raises(OSError) as e:
            os.unlink(a.p("locks/q.lock"))
        assert e.value.errno == errno.EIO
        assert "not released" in a.logtext()
        emulator.clear_faults()
        # Not released (b cannot take it at once), and not renewed.
        assert not try_lock(b.p("locks/q.lock"))
        wait_for(lambda: try_lock(b.p("locks/q.lock")), ttl + 10, "the lease to run out")
        os.unlink(b.p("locks/q.lock"))
    finally:
        a.cleanup()
        b.cleanup()
