"""test_mount_overlay.py — vectur-mount behaviours beyond the basic data
path: fsync reaching Drive, renames out of the persisted tree, two mounts
seeing each other's writes, kill -9 of the mount, merged directories that
exist only on Drive, the persist set's sources, the errno of what Drive
cannot do, and injected server faults.

Same conventions as test_mount_basic.py (whose helpers these reuse): root,
the `emulator` fixture, one Drive folder and mount directory per test."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_mount_basic import Mount, drive_lookup, run_argv, wait_for, wait_on_drive
from test_mount_basic import pytestmark  # noqa: F401  (root, /dev/fuse, binary)


@pytest.fixture
def mounts(emulator, tmp_path):
    made = []

    def make(**kw):
        m = Mount(emulator, tmp_path, **kw)
        made.append(m)
        return m
    yield make
    emulator.clear_faults()
    for m in made:
        m.cleanup()


FSYNC_CHILD = r"""
import hashlib, os, sys
path = sys.argv[1]
data = os.urandom(1 << 20)
with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
    print(hashlib.md5(data).hexdigest(), flush=True)
"""


def test_fsync_returns_when_the_version_is_on_drive(mounts):
    m = mounts().start(extra="write_back=60")  # only fsync can push it now
    os.makedirs(m.p("runs/f"))
    # In a child with a timeout: a hung fsync must fail the test, not
    # hang the suite (SIGKILL interrupts a FUSE request).
    r = subprocess.run([sys.executable, "-c", FSYNC_CHILD, m.p("runs/f/ckpt.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = drive_lookup(m.emu, m.folder, "runs/f/ckpt.pt")
    assert got is not None and got["md5Checksum"] == r.stdout.strip()


def test_rename_from_drive_to_local_moves_the_content(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/r"))
    with open(m.p("runs/r/best.pt"), "wb") as f:
        f.write(b"weights" * 1000)
    wait_on_drive(m.emu, m.folder, "runs/r/best.pt", b"weights" * 1000)
    os.rename(m.p("runs/r/best.pt"), m.p("best.pt"))
    assert open(m.p("best.pt"), "rb").read() == b"weights" * 1000
    assert not os.path.exists(m.p("runs/r/best.pt"))
    wait_for(lambda: drive_lookup(m.emu, m.folder, "runs/r/best.pt") is None, 30,
             "best.pt to leave Drive")
    m.stop()
    assert open(os.path.join(m.mnt, "best.pt"), "rb").read() == b"weights" * 1000


def test_rename_local_to_drive_with_noreplace_semantics(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/n"))
    with open(m.p("a.txt"), "w") as f:
        f.write("a")
    os.rename(m.p("a.txt"), m.p("runs/n/a.txt"))
    assert open(m.p("runs/n/a.txt")).read() == "a"
    assert not os.path.exists(m.p("a.txt"))
    # A directory cannot cross in one piece: mv falls back to copying.
    os.makedirs(m.p("localdir"))
    with pytest.raises(OSError) as e:
        os.rename(m.p("localdir"), m.p("runs/n/localdir"))
    assert e.value.errno == errno.EXDEV
    wait_on_drive(m.emu, m.folder, "runs/n/a.txt", b"a")


def test_a_local_file_renamed_onto_drive_while_open_keeps_its_later_writes(mounts):
    # os.replace(tmp, ckpt) inside the `with`: the handle goes on writing
    # the renamed file, as on a local disk — before, the writes after the
    # rename went to the removed local file and were lost.
    m = mounts().start()
    os.makedirs(m.p("runs/o"))
    with open(m.p("ckpt.tmp"), "wb") as f:
        f.write(b"A" * 5000)
        os.replace(m.p("ckpt.tmp"), m.p("runs/o/ckpt.pt"))
        f.write(b"B" * 3000)
        f.flush()
        assert os.fstat(f.fileno()).st_size == 8000
    with open(m.p("log.tmp"), "ab") as g:
        g.write(b"one\n")
        os.replace(m.p("log.tmp"), m.p("runs/o/log.txt"))
        g.write(b"two\n")
    assert open(m.p("runs/o/ckpt.pt"), "rb").read() == b"A" * 5000 + b"B" * 3000
    assert open(m.p("runs/o/log.txt"), "rb").read() == b"one\ntwo\n"
    assert not os.path.exists(m.p("ckpt.tmp"))
    wait_on_drive(m.emu, m.folder, "runs/o/ckpt.pt", b"A" * 5000 + b"B" * 3000)
    wait_on_drive(m.emu, m.folder, "runs/o/log.txt", b"one\ntwo\n")


def test_a_drive_file_renamed_to_local_while_open_keeps_its_later_writes(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/p"))
    with open(m.p("runs/p/out.bin"), "wb") as f:
        f.write(b"A" * 5000)
        os.replace(m.p("runs/p/out.bin"), m.p("out.bin"))
        f.write(b"B" * 3000)
    assert open(m.p("out.bin"), "rb").read() == b"A" * 5000 + b"B" * 3000
    assert not os.path.exists(m.p("runs/p/out.bin"))
    assert m.stop() == 0  # drains the queue
    assert drive_lookup(m.emu, m.folder, "runs/p/out.bin") is None
    assert open(os.path.join(m.mnt, "out.bin"), "rb").read() == b"A" * 5000 + b"B" * 3000


def test_a_file_renamed_back_and_forth_while_another_thread_writes_loses_nothing(mounts):
    import threading
    m = mounts().start()
    os.makedirs(m.p("runs/q"))
    names = [m.p("w.bin"), m.p("runs/q/w.bin")]
    f = open(names[0], "wb", buffering=0)
    stop = threading.Event()
    wrote = []

    def writer():
        i = 0
        while not stop.is_set() or i < 50:
            chunk = (b"%06d" % i) * 100
            assert f.write(chunk) == len(chunk)
            wrote.append(chunk)
            i += 1
    t = threading.Thread(target=writer)
    t.start()
    for k in range(8):  # local -> Drive -> local ... four times each way
        time.sleep(0.05)
        os.replace(names[k % 2], names[(k + 1) % 2])
    stop.set()
    t.join()
    f.close()
    want = b"".join(wrote)
    assert open(names[0], "rb").read() == want
    assert not os.path.exists(names[1])
    m.stop()
    assert open(os.path.join(m.mnt, "w.bin"), "rb").read() == want


def test_a_writer_left_on_a_replaced_file_does_not_follow_its_path_out(mounts):
    # a keeps writing the runs/r/x that a rename replaced (as on a local
    # disk, it writes a file no longer at that path); renaming runs/r/x out
    # must not make a write into the file now there.
    m = mounts().start()
    os.makedirs(m.p("runs/r"))
    with open(m.p("runs/r/x"), "wb", buffering=0) as a:
        a.write(b"old")
        with open(m.p("tmp"), "wb") as t:
            t.write(b"NEW CONTENT")
        os.replace(m.p("tmp"), m.p("runs/r/x"))
        os.replace(m.p("runs/r/x"), m.p("y.txt"))
        a.write(b"ZZZ")
    assert open(m.p("y.txt"), "rb").read() == b"NEW CONTENT"
    assert m.stop() == 0


def test_a_file_open_for_writing_renamed_onto_drive_is_copied_once(mounts, tmp_path):
    # 22 MB held open, renamed into a 40 MB cache disk: one copy fits, two
    # did not (the rename failed with ENOSPC and left both names).
    cdir = tmp_path / "smallcache"
    os.makedirs(cdir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(cdir)], check=True)
    try:
        m = mounts(cache="smallcache").start()
        os.makedirs(m.p("runs/e"))
        data = os.urandom(22 << 20)
        with open(m.p("ckpt.tmp"), "wb", buffering=0) as f:
            f.write(data)
            os.replace(m.p("ckpt.tmp"), m.p("runs/e/ckpt.pt"))
            f.write(b"tail")
        assert not os.path.exists(m.p("ckpt.tmp"))
        assert open(m.p("runs/e/ckpt.pt"), "rb").read() == data + b"tail"
        assert m.stop() == 0
        got = drive_lookup(m.emu, m.folder, "runs/e/ckpt.pt")
        assert got and got["md5Checksum"] == hashlib.md5(data + b"tail").hexdigest()
    finally:
        subprocess.run(["umount", "-l", str(cdir)])


def test_sync_reports_a_delete_that_drive_refuses_for_good_instead_of_waiting(mounts):
    # A file someone else owns (403 on delete and trash): the delete is
    # retried every 5 minutes, and --sync used to wait for it forever.
    m = mounts().start()
    os.makedirs(m.p("runs/t"))
    with open(m.p("runs/t/theirs.txt"), "w") as f:
        f.write("x")
    wait_on_drive(m.emu, m.folder, "runs/t/theirs.txt", b"x")
    m.emu.set_faults({"fail_rate": 1.0, "fail_status": 403,
                      "fail_reason": "insufficientFilePermissions",
                      "fail_kinds": ["delete", "update"]})
    os.unlink(m.p("runs/t/theirs.txt"))
    vm = os.path.join(os.path.dirname(m.argv()[0]), "vectur-mount")
    r = run_argv([vm, "--sync", m.mnt], timeout=60)
    assert r.returncode != 0
    assert "insufficientFilePermissions" in r.stderr or "403" in r.stderr, r.stderr
    m.emu.clear_faults()
    # Drive takes it again: the next sync sees it through.
    wait_for(lambda: run_argv([vm, "--sync", m.mnt], timeout=60).returncode == 0, 400,
             "the delete to go through")
    assert drive_lookup(m.emu, m.folder, "runs/t/theirs.txt") is None


def test_a_delete_drive_refuses_does_not_fail_an_unrelated_lock_release(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/t"))
    with open(m.p("runs/t/theirs.txt"), "w") as f:
        f.write("x")
    wait_on_drive(m.emu, m.folder, "runs/t/theirs.txt", b"x")
    m.emu.set_faults({"fail_rate": 1.0, "fail_status": 403,
                      "fail_reason": "insufficientFilePermissions",
                      "fail_kinds": ["update"]})  # the trash
    os.unlink(m.p("runs/t/theirs.txt"))
    wait_for(lambda: "insufficientFilePermissions" in
             json.load(open(m.p(".vectur/status")))["last_error"], 30,
             "the trash to be refused")
    os.makedirs(m.p("locks"), exist_ok=True)
    fd = os.open(m.p("locks/job.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    os.unlink(m.p("locks/job.lock"))  # the release: EIO before
    m.emu.clear_faults()
    wait_for(lambda: drive_lookup(m.emu, m.folder, "locks/job.lock") is None, 30,
             "the lock to leave Drive")


def big_file_uncached_on_b(mounts):
    """Mount a writes 6 MiB runs/x/big.bin to Drive; mount b (own cache)
    lists runs/x but has not read it. Returns (a, b, data)."""
    a = mounts(name="a", cache="cache-a").start()
    os.makedirs(a.p("runs/x"))
    data = os.urandom(6 << 20)
    with open(a.p("runs/x/big.bin"), "wb") as f:
        f.write(data)
    wait_on_drive(a.emu, a.folder, "runs/x/big.bin", data)
    b = mounts(name="b", cache="cache-b", folder=a.folder).start()
    os.listdir(b.p("runs/x"))
    return a, b, data


def test_a_slow_rename_across_the_boundary_does_not_hold_up_other_opens(mounts):
    import threading
    a, b, data = big_file_uncached_on_b(mounts)
    os.makedirs(b.p("logs"))  # the kernel holds the rename's two folders
    a.emu.set_faults({"bandwidth": 1 << 20})  # ~6 s to fetch it for the copy
    took = {}

    def mv():
        t0 = time.time()
        os.rename(b.p("runs/x/big.bin"), b.p("big_local.bin"))
        took["mv"] = time.time() - t0
    th = threading.Thread(target=mv)
    th.start()
    time.sleep(1.0)
    t0 = time.time()
    with open(b.p("logs/unrelated.log"), "a") as f:
        f.write("x")
    took["open"] = time.time() - t0
    th.join()
    a.emu.clear_faults()
    assert took["mv"] > 2.0  # it was slow indeed
    assert took["open"] < took["mv"] / 2, took  # waited for all of it before
    assert open(b.p("big_local.bin"), "rb").read() == data


def test_an_exchange_with_a_merged_dir_with_drive_content_is_refused(mounts):
    # RENAME_EXCHANGE would swap the local sides only, merging the Drive
    # side into the other directory's content: EXDEV, nothing moves.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    a = mounts().start()
    os.makedirs(a.p("experiments"))
    with open(a.p("experiments/work_graph.json"), "w") as f:
        f.write("{}")
    wait_on_drive(a.emu, a.folder, "experiments/work_graph.json", b"{}")
    os.makedirs(a.p("exp_new"))
    with open(a.p("exp_new/mine.txt"), "w") as f:
        f.write("mine")
    rc = libc.renameat2(AT_FDCWD, a.p("exp_new").encode(), AT_FDCWD,
                        a.p("experiments").encode(), RENAME_EXCHANGE)
    assert rc == -1 and ctypes.get_errno() == errno.EXDEV
    assert os.listdir(a.p("experiments")) == ["work_graph.json"]
    assert os.listdir(a.p("exp_new")) == ["mine.txt"]


def test_a_rename_across_the_boundary_does_not_wait_for_other_files_opens(mounts):
    # An append-open of an uncached file fetches it whole inside open(); a
    # rename of another file into runs/ waited for all of it.
    import threading
    a, b, data = big_file_uncached_on_b(mounts)
    with open(b.p("small.txt"), "w") as f:
        f.write("s")
    a.emu.set_faults({"bandwidth": 1 << 20})  # ~6 s to fetch big.bin
    took = {}

    def app():
        t0 = time.time()
        with open(b.p("runs/x/big.bin"), "ab") as f:
            took["open"] = time.time() - t0
            f.write(b"x")
    th = threading.Thread(target=app)
    th.start()
    time.sleep(1.0)
    t0 = time.time()
    os.rename(b.p("small.txt"), b.p("runs/small.txt"))
    took["mv"] = time.time() - t0
    th.join()
    a.emu.clear_faults()
    assert took["open"] > 3.0  # it was slow indeed
    assert took["mv"] < took["open"] / 2, took


def test_a_second_mount_sees_the_first_ones_writes(mounts, tmp_path):
    a = mounts(name="a", cache="cache-a").start()
    b = mounts(name="b", cache="cache-b", folder=a.folder).start()
    os.makedirs(a.p("runs/shared"))
    with open(a.p("runs/shared/x.txt"), "w") as f:
        f.write("from a")
    wait_on_drive(a.emu, a.folder, "runs/shared/x.txt", b"from a")

    def seen():
        try:
            return open(b.p("runs/shared/x.txt")).read() == "from a"
        except OSError:
            return False
    wait_for(seen, 30, "b to see a's file")
    # ... and a change to it.
    with open(a.p("runs/shared/x.txt"), "w") as f:
        f.write("from a, v2")
    wait_on_drive(a.emu, a.folder, "runs/shared/x.txt", b"from a, v2")
    wait_for(lambda: open(b.p("runs/shared/x.txt")).read() == "from a, v2", 30,
             "b to see the new version")


def test_closed_file_survives_kill9_of_the_mount(mounts):
    m = mounts().start(extra="write_back=60")
    os.makedirs(m.p("runs/k"))
    data = os.urandom(512 << 10)
    with open(m.p("runs/k/ckpt.pt"), "wb") as f:
        f.write(data)
    time.sleep(0.3)  # the RELEASE is asynchronous to close(2)
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    m.proc = None
    subprocess.run(["fusermount3", "-u", m.mnt], capture_output=True)
    assert drive_lookup(m.emu, m.folder, "runs/k/ckpt.pt") is None
    m.start()  # same cache dir: the queued version goes up now
    wait_on_drive(m.emu, m.folder, "runs/k/ckpt.pt", data, timeout=60)
    assert open(m.p("runs/k/ckpt.pt"), "rb").read() == data


def test_merged_dir_that_exists_only_on_drive_is_usable(mounts):
    a = mounts(name="a", cache="cache-a").start()
    os.makedirs(a.p("experiments"))
    with open(a.p("experiments/work_graph.json"), "w") as f:
        f.write("{}")
    wait_on_drive(a.emu, a.folder, "experiments/work_graph.json", b"{}")
    b = mounts(name="b", cache="cache-b", folder=a.folder).start()
    assert not os.path.exists(os.path.join(b.tmp, "b", "experiments")) or True
    assert "experiments" in os.listdir(b.mnt)
    assert os.listdir(b.p("experiments")) == ["work_graph.json"]
    # A local file next to it: the local directory is made on demand.
    with open(b.p("experiments/notes.txt"), "w") as f:
        f.write("local note")
    assert sorted(os.listdir(b.p("experiments"))) == ["notes.txt", "work_graph.json"]
    b.stop()
    assert open(os.path.join(b.mnt, "experiments", "notes.txt")).read() == "local note"
    assert drive_lookup(a.emu, a.folder, "experiments/notes.txt") is None


def test_a_local_dir_renamed_onto_a_merged_dir_only_on_drive_is_refused(mounts):
    # The rename of the local side alone succeeded and merged the two
    # directories' content: a non-empty target must refuse (ENOTEMPTY),
    # as it does when the target is local.
    a = mounts(name="a", cache="cache-a").start()
    os.makedirs(a.p("experiments"))
    with open(a.p("experiments/work_graph.json"), "w") as f:
        f.write("{}")
    wait_on_drive(a.emu, a.folder, "experiments/work_graph.json", b"{}")
    b = mounts(name="b", cache="cache-b", folder=a.folder).start()
    os.makedirs(b.p("exp_new"))
    with open(b.p("exp_new/notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(OSError) as e:
        os.rename(b.p("exp_new"), b.p("experiments"))
    assert e.value.errno == errno.ENOTEMPTY
    with open(b.p("a_file"), "w") as f:
        f.write("f")
    with pytest.raises(OSError) as e:
        os.rename(b.p("a_file"), b.p("experiments"))
    assert e.value.errno == errno.EISDIR
    assert os.listdir(b.p("experiments")) == ["work_graph.json"]
    assert os.listdir(b.p("exp_new")) == ["notes.txt"]


def test_vectur_persist_file_replaces_the_default_set(mounts):
    m = mounts()
    with open(m.p("vectur.persist"), "w") as f:
        f.write("# only checkpoints\n*.ckpt\n")
    m.start()
    os.makedirs(m.p("out/deep"))
    with open(m.p("out/deep/model.ckpt"), "wb") as f:
        f.write(b"ckpt")
    os.makedirs(m.p("runs"))
    with open(m.p("runs/log.txt"), "w") as f:
        f.write("stays local")
    wait_on_drive(m.emu, m.folder, "out/deep/model.ckpt", b"ckpt")
    st = json.load(open(m.p(".vectur/status")))
    assert st["mount"]["persist"] == ["*.ckpt"]
    m.stop()
    assert open(os.path.join(m.mnt, "runs", "log.txt")).read() == "stays local"
    assert not os.path.exists(os.path.join(m.mnt, "out", "deep", "model.ckpt"))


def test_persist_everything_puts_new_files_on_drive(mounts):
    m = mounts().start(extra="persist=**")
    with open(m.p("notes.md"), "w") as f:
        f.write("all on drive")
    wait_on_drive(m.emu, m.folder, "notes.md", b"all on drive")
    m.stop()
    assert not os.path.exists(os.path.join(m.mnt, "notes.md"))


def test_what_drive_cannot_do_gets_a_proper_errno(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/e"))
    with open(m.p("runs/e/f"), "w") as f:
        f.write("x")
    with open(m.p("local.txt"), "w") as f:
        f.write("local")
    cases = [
        (lambda: os.symlink("f", m.p("runs/e/link")), errno.EPERM),
        (lambda: os.link(m.p("runs/e/f"), m.p("runs/e/hard")), errno.EPERM),
        (lambda: os.mkfifo(m.p("runs/e/fifo")), errno.EPERM),
        (lambda: os.setxattr(m.p("runs/e/f"), "user.k", b"v"), errno.ENOTSUP),
        # No xattrs anywhere, local files included: the kernel then skips
        # its getxattr("security.capability") round trip on every write.
        (lambda: os.getxattr(m.p("runs/e/f"), "security.capability"),
         errno.ENOTSUP),
        (lambda: os.setxattr(m.p("local.txt"), "user.k", b"v"), errno.ENOTSUP),
        (lambda: os.getxattr(m.p("local.txt"), "user.k"), errno.ENOTSUP),
    ]
    for fn, want in cases:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == want, fn
    # The control directory is read-only.
    with pytest.raises(OSError):
        open(m.p(".vectur/new"), "w")


def test_exclusive_create_of_an_existing_persisted_file_fails(mounts):
    m = mounts().start()
    os.makedirs(m.p("locks"))
    fd = os.open(m.p("locks/a.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(m.p("locks/a.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def test_server_errors_slow_uploads_down_but_lose_nothing(mounts):
    m = mounts().start()
    os.makedirs(m.p("runs/faults"))
    m.emu.set_faults({"fail_rate": 0.3, "fail_status": 503, "seed": 7})
    want = {}
    for i in range(5):
        data = os.urandom(64 << 10) + bytes([i])
        with open(m.p("runs/faults/c%d.pt" % i), "wb") as f:
            f.write(data)
        want["runs/faults/c%d.pt" % i] = data
    r = run_argv([os.path.join(os.path.dirname(m.argv()[0]), "vectur-mount"), "--sync", m.mnt],
                 timeout=300)
    m.emu.clear_faults()
    assert r.returncode == 0, r.stderr
    for rel, data in want.items():
        wait_on_drive(m.emu, m.folder, rel, data, timeout=10)


def test_merged_listing_is_the_union_and_drive_wins_a_clash(mounts):
    m = mounts()
    os.makedirs(m.p("experiments"))
    with open(m.p("experiments/work_graph.json"), "w") as f:
        f.write('{"local": true}')
    with open(m.p("experiments/config.yaml"), "w") as f:
        f.write("lr: 1")
    with open(m.p("train.py"), "w") as f:
        f.write("pass\n")
    m.start()
    # Drive has no graph yet: the local one is hidden, not shown as Drive's.
    assert sorted(os.listdir(m.p("experiments"))) == ["config.yaml"]
    assert not os.path.exists(m.p("experiments/work_graph.json"))
    with open(m.p("experiments/work_graph.json"), "w") as f:
        f.write('{"drive": true}')
    assert sorted(os.listdir(m.p("experiments"))) == ["config.yaml", "work_graph.json"]
    assert json.load(open(m.p("experiments/work_graph.json"))) == {"drive": True}
    os.makedirs(m.p("runs"))
    assert sorted(os.listdir(m.mnt)) == ["experiments", "runs", "train.py"]
    st = json.load(open(m.p(".vectur/status")))
    assert "experiments/work_graph.json" in st["mount"]["shadowed"]
    wait_on_drive(m.emu, m.folder, "experiments/work_graph.json", b'{"drive": true}')
    m.stop()
    assert open(os.path.join(m.mnt, "experiments", "work_graph.json")).read() == '{"local": true}'


def test_unmount_drains_the_queue_before_the_process_exits(mounts):
    m = mounts().start(extra="write_back=60")  # nothing would go up by itself
    os.makedirs(m.p("runs/d"))
    data = os.urandom(256 << 10)
    with open(m.p("runs/d/last.pt"), "wb") as f:
        f.write(data)
    time.sleep(0.3)  # the RELEASE is asynchronous to close(2)
    assert drive_lookup(m.emu, m.folder, "runs/d/last.pt") is None
    assert m.stop() == 0
    f = drive_lookup(m.emu, m.folder, "runs/d/last.pt")
    assert f is not None and f["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert "drain" in m.logtext()


def test_a_file_open_for_writing_when_the_mount_dies_never_reaches_drive(mounts):
    m = mounts().start(extra="write_back=0.2")
    os.makedirs(m.p("runs/o"))
    with open(m.p("runs/o/done.pt"), "wb") as f:
        f.write(b"complete")
    wait_on_drive(m.emu, m.folder, "runs/o/done.pt", b"complete")
    f = open(m.p("runs/o/half.pt"), "wb")
    f.write(b"half of a checkpoint")
    f.flush()
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait()
    m.proc = None
    try:
        f.close()
    except OSError:
        pass  # ENOTCONN: the mount is gone
    subprocess.run(["fusermount3", "-u", m.mnt], capture_output=True)
    m.start()
    time.sleep(2)  # several write_back periods
    m.stop()
    assert drive_lookup(m.emu, m.folder, "runs/o/half.pt") is None or \
        drive_lookup(m.emu, m.folder, "runs/o/half.pt").get("size") in ("0", 0, None)
    assert drive_lookup(m.emu, m.folder, "runs/o/done.pt")["md5Checksum"] == \
        hashlib.md5(b"complete").hexdigest()


@pytest.mark.parametrize("kind", ["utf16", "directory", "comments", "empty_opt",
                                  "bracket_opt", "bracket_file"])
def test_a_persist_set_that_keeps_nothing_is_refused(mounts, kind):
    # Each of these mounted: a UTF-16 vectur.persist became one garbage
    # pattern (read up to its first NUL), a directory or a file of comments
    # an empty set, `-o persist=` too: runs/ then stayed on the local disk
    # with nothing said. Now the mount is refused, naming why, before Drive
    # or the cache dir are touched (it used to be judged after both): exit
    # 2 for a bad -o persist (usage), 1 for a vectur.persist that cannot be
    # used. A '[' without its ']' matched nothing meant: refused too.
    m = mounts()
    extra = ""
    if kind == "utf16":
        with open(m.p("vectur.persist"), "wb") as f:
            f.write("runs/**\n".encode("utf-16"))
        why = "contains a NUL byte"
    elif kind == "directory":
        os.mkdir(m.p("vectur.persist"))
        why = "cannot read it: Is a directory"
    elif kind == "comments":
        with open(m.p("vectur.persist"), "w") as f:
            f.write("# runs/**\n\n")
        why = "no pattern in it"
    elif kind == "bracket_file":
        with open(m.p("vectur.persist"), "w") as f:
            f.write("runs/**\nckpt[12/*.pt\n")
        why = "line 2: persist pattern 'ckpt[12/*.pt': a '[' has no closing ']'"
    elif kind == "bracket_opt":
        extra = "persist=runs/[ab"
        why = "a '[' has no closing ']'"
    else:
        extra = "persist="
        why = "gives no pattern"
    m.emu.reset_stats()
    r = subprocess.run(m.argv("-f", "gdrive:" + m.folder, m.mnt, extra=extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == (2 if kind.endswith("_opt") else 1), (r.returncode, r.stderr)
    assert why in r.stderr, r.stderr
    assert not os.path.ismount(m.mnt)
    assert m.emu.stats()["total"] == 0, m.emu.stats()  # not even a token refresh
    assert not os.path.exists(m.cache)
