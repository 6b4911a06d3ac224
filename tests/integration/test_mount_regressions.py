"""test_mount_regressions.py — one test per bug found in vectur-mount, each
failing before its fix. Uses the Mount helper of test_mount_basic.py, and
mountlib's where a test needs several mounts or kill -9."""

import errno
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from test_mount_basic import (Mount, VM, drive_lookup, md5_bytes,  # noqa: F401
                              wait_on_drive, pytestmark)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib  # noqa: E402


@pytest.fixture
def mount(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    yield m
    m.cleanup()


@pytest.fixture
def mounts(emulator, tmp_path):
    with mountlib.mount_factory(emulator, tmp_path) as make:
        yield make


def test_o_trunc_truncates_a_file_already_uploaded_after_a_replace(mount):
    # The graph is replaced with os.replace, uploaded (its version is then
    # CLEAN with its fd closed), then rewritten shorter with open('w'):
    # the old tail must not survive (it did: ftruncate hit a closed fd).
    mount.start()
    os.makedirs(mount.p("experiments"))
    g = mount.p("experiments/work_graph.json")
    with open(g + ".tmp", "w") as f:
        json.dump({"stages": ["a", "b", "c"]}, f)
    os.replace(g + ".tmp", g)
    wait_on_drive(mount.emu, mount.folder, "experiments/work_graph.json",
                  open(g, "rb").read())
    with open(g, "w") as f:
        f.write("{}")
    assert open(g).read() == "{}"
    assert os.stat(g).st_size == 2
    wait_on_drive(mount.emu, mount.folder, "experiments/work_graph.json", b"{}")


def test_names_drive_would_give_back_otherwise_are_refused(mount):
    # A local name with a tab went to Drive as it is and came back, after a
    # remount, as "x\u2409y" (the control picture, as rclone lists it) --
    # also the name "x\u2409y" itself was stored as "x\ty": two files, one
    # name. (Before that, the two spellings never matched and the queue
    # renamed the file on Drive ~10 times a second forever.) Such names are
    # now refused with EINVAL; their listed spellings work and come back.
    mount.start(extra="write_back=0")
    os.makedirs(mount.p("runs/n"))
    for name in ["x\ty.txt", "run1\n", "\u201bstray.txt", "\u2400nul.txt"]:
        with pytest.raises(OSError) as e:
            open(mount.p("runs/n/" + name), "w").close()
        assert e.value.errno == errno.EINVAL, name
        with pytest.raises(OSError) as e:
            os.mkdir(mount.p("runs/n/" + name))
        assert e.value.errno == errno.EINVAL, name
    with open(mount.p("runs/n/ok.txt"), "w") as f:
        f.write("ok")
    with pytest.raises(OSError) as e:
        os.rename(mount.p("runs/n/ok.txt"), mount.p("runs/n/a\tb"))
    assert e.value.errno == errno.EINVAL
    names = ["x\u2409y.txt", "run1\u240a", "\u201b\u201bquoted.txt",
             "\u201b\u2400nul.txt", "ok.txt"]
    for name in names[:-1]:
        with open(mount.p("runs/n/" + name), "w") as f:
            f.write(name)
    r = subprocess.run([VM, "--sync", mount.mnt], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    before = mount.emu.stats()["requests"].get("update", 0)
    time.sleep(2)
    after = mount.emu.stats()["requests"].get("update", 0)
    assert after == before, "%d renames on Drive in 2 s" % (after - before)
    mount.stop()
    mount.start(cache=str(mount.tmp / "cache-empty"))  # names as Drive gives back
    assert sorted(os.listdir(mount.p("runs/n"))) == sorted(names)
    for name in names[:-1]:
        assert open(mount.p("runs/n/" + name)).read() == name


def test_rmdir_of_a_folder_another_instance_filled_meanwhile_is_refused(mounts):
    # a saw runs/shared empty; b then wrote a checkpoint into it, which a's
    # changes feed (poll_interval=60) had not brought yet. a's rmdir used
    # to succeed on its old view and trash the folder on Drive, b's
    # checkpoint with it.
    a = mounts(name="a", cache="cache-a",
               opts="write_back=0,poll_interval=60,drain_timeout=30").start()
    b = mounts(name="b", cache="cache-b", folder=a.folder).start()
    os.makedirs(a.p("runs/shared"))
    assert a.sync().returncode == 0
    assert os.listdir(a.p("runs/shared")) == []
    mountlib.wait_for(lambda: os.path.isdir(b.p("runs/shared")), 15, "b to see the folder")
    with open(b.p("runs/shared/ckpt.pt"), "wb") as f:
        f.write(b"weights")
    assert b.sync().returncode == 0
    with pytest.raises(OSError) as e:
        os.rmdir(a.p("runs/shared"))
    assert e.value.errno == errno.ENOTEMPTY
    assert os.listdir(a.p("runs/shared")) == ["ckpt.pt"]
    assert drive_lookup(a.emu, a.folder, "runs/shared/ckpt.pt") is not None


def test_sync_waits_for_a_version_superseded_before_it_landed(mount):
    # `--sync` promises that everything closed before it is on Drive. A
    # version closed before the sync and superseded before it could be
    # sent (here by an fsync of a newer write, whose version is on disk
    # at once) was dropped, and sync stopped waiting: it returned while
    # the newer one was still uploading, with neither on Drive.
    mount.env["VECTUR_BACKOFF_BASE_MS"] = "1"  # the client gives up fast
    mount.start(extra="write_back=60")
    os.makedirs(mount.p("runs"))
    v1, v2 = os.urandom(3 << 20), os.urandom(3 << 20)
    ck = mount.p("runs/ck.bin")
    with open(ck, "wb") as f:
        f.write(v1)
    mount.emu.set_faults({"fail_rate": 1.0, "fail_status": 503})
    sync = subprocess.Popen([VM, "--sync", mount.mnt], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    writer = None
    try:
        # v1's upload fails for good this round: the file backs off,
        # with v1 closed and not being sent.
        deadline = time.time() + 60
        while True:
            with open(mount.p(".vectur/status")) as sf:
                st = json.load(sf)
            if st["last_error"] and not st["uploading"]:
                break
            assert time.time() < deadline, st
            time.sleep(0.05)
        mount.emu.set_faults({"bandwidth": 1000000})  # v2 takes ~3 s

        def write_v2():
            with open(ck, "wb") as f:
                f.write(v2)
                f.flush()
                os.fsync(f.fileno())
        writer = threading.Thread(target=write_v2)
        writer.start()
        out, _ = sync.communicate(timeout=120)
        f = drive_lookup(mount.emu, mount.folder, "runs/ck.bin")
    finally:
        if sync.poll() is None:
            sync.kill()
        if writer:
            writer.join(120)
        mount.emu.clear_faults()
    assert sync.returncode == 0, out
    assert f is not None, "sync returned with runs/ck.bin not on Drive"
    assert f.get("md5Checksum") in (md5_bytes(v1), md5_bytes(v2))


def test_unmount_with_drive_failing_ends_soon_after_drain_timeout(mount):
    # With Drive failing, the uploaders sit in the client's retry backoff
    # (up to 32 s a sleep, ten retries). The unmount waited for them to
    # run out: minutes past drain_timeout (a daemon was once found hung).
    # Now the client gives up 10 s after the drain and the queue stays
    # for the next mount.
    mount.start(extra="write_back=0,drain_timeout=2")
    os.makedirs(mount.p("runs"))
    mount.emu.set_faults({"fail_rate": 1.0, "fail_status": 503})
    try:
        for i in range(3):
            with open(mount.p("runs/f%d.bin" % i), "wb") as f:
                f.write(os.urandom(300000))
        time.sleep(8)  # the retries are past their first short sleeps
        proc = mount.proc
        t0 = time.monotonic()
        subprocess.run(["fusermount3", "-u", mount.mnt], capture_output=True)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - t0
        assert proc.poll() is not None, "vectur-mount still running 60 s after unmount"
        mount.proc = None
        assert took < 2 + 10 + 15, took
        assert "stay queued" in open(mount.log).read()
    finally:
        mount.emu.clear_faults()
    # The queue is uploaded by the next mount.
    mount.start()
    r = subprocess.run([VM, "--sync", mount.mnt], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def live_at(emu, folder, rel):
    return mountlib.DriveView(emu, folder).live_files().get(rel, [])


@pytest.mark.parametrize("b_write_back", ["0.2", "2.5"])
def test_two_mounts_creating_one_new_name_end_with_one_drive_file(
        mounts, emulator, b_write_back):
    # Both create runs/race/fN.bin at the same moment (neither knows the
    # other's): both used to land, two Drive files of one name for good.
    # Now the newer one's content goes into the older file and the newer
    # file is trashed: one file, holding one of the two closed versions.
    # With b's write_back longer than a poll, b sees a's file before its
    # own upload and sends its content into it without creating one.
    make = mounts
    a = make(name="a", cache="cache-a").start()
    b = make(name="b", cache="cache-b", folder=a.folder,
             opts="write_back=%s,poll_interval=1,drain_timeout=30" % b_write_back).start()
    os.makedirs(a.p("runs/race"), exist_ok=True)
    os.makedirs(b.p("runs/race"), exist_ok=True)
    names = ["runs/race/f%d.bin" % i for i in range(6)]
    wrote = {rel: {} for rel in names}
    for rel in names:
        go = threading.Barrier(2)

        def write(m, tag):
            data = (tag * 64) + os.urandom(300_000 if rel.endswith("0.bin") else 20_000)
            go.wait()
            with open(m.p(rel), "wb") as f:
                f.write(data)
            wrote[rel][tag] = mountlib.md5(data)
        ts = [threading.Thread(target=write, args=(m, tag))
              for m, tag in ((a, b"A"), (b, b"B"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
    for m in (a, b):
        r = m.sync()
        assert r.returncode == 0, r.stderr + m.diag()
        if b_write_back != "0.2":
            time.sleep(1.5)   # b's feed shows a's files before b uploads

    def settled():
        view = mountlib.DriveView(emulator, a.folder)
        live = view.live_files()
        return all(len(live.get(rel, [])) == 1 for rel in names) and view
    try:
        view = mountlib.wait_for(settled, 60, "one Drive file per name", interval=0.2)
    except AssertionError:
        live = mountlib.DriveView(emulator, a.folder).live_files()
        raise AssertionError("Drive files per name: %s\n%s\n%s" % (
            {rel: len(live.get(rel, [])) for rel in names}, a.diag(), b.diag()))
    live = view.live_files()
    for rel in names:
        f = live[rel][0]
        assert f["md5Checksum"] in wrote[rel].values(), (rel, f, wrote[rel])
        for v in view.versions_of(f["id"]):   # never a mix of the two
            assert v["md5"] in wrote[rel].values(), (rel, v)
    assert not view.duplicates(), view.duplicates()
    # Both mounts come to read what Drive has.
    for rel in names:
        want = live[rel][0]["md5Checksum"]
        for m in (a, b):
            mountlib.wait_for(lambda: mountlib.md5(open(m.p(rel), "rb").read()) == want,
                              30, "%s on mount %s to read Drive's content" % (rel, m.mnt))


def test_mounting_over_a_live_vectur_mount_is_refused(mounts, emulator):
    # The second mount used to stack on top of the first: its "local"
    # directory was then the first mount itself.
    make = mounts
    a = make(name="a", cache="cache-a").start()
    b = make(name="a", cache="cache-b", folder=a.folder)
    os.makedirs(a.p("sub"))
    try:
        for where, says in ((a.mnt, "already a vectur mount"),
                            (a.p("sub"), "inside the vectur mount")):
            r = subprocess.run(b.argv("gdrive:" + b.folder, where), capture_output=True,
                               text=True, timeout=60)
            assert r.returncode != 0, "mounted over %s" % where
            assert says in r.stderr, r.stderr
            assert "fusermount3 -u" in r.stderr or "outside" in r.stderr, r.stderr
            assert not os.path.exists(os.path.join(b.tmp, "cache-b", "meta.db"))
    finally:
        # Before the fix these mounts succeeded: take them down again.
        for where in (a.p("sub"), a.mnt):
            while mountlib.in_mount_table(where) and len(
                    [1 for line in open("/proc/self/mountinfo")
                     if line.split()[4] == os.path.realpath(where)]) > (where == a.mnt):
                subprocess.run(["fusermount3", "-u", where], capture_output=True)
    # The first mount is untouched and works.
    os.makedirs(a.p("runs"), exist_ok=True)
    with open(a.p("runs/x"), "wb") as f:
        f.write(b"still here")
    assert a.sync().returncode == 0
    assert open(a.p("runs/x"), "rb").read() == b"still here"
    assert a.status()["mount"]["pid"] == a.proc.pid


def test_unlink_right_after_a_kill9_that_cut_a_create_leaves_nothing_on_drive(
        mounts, emulator):
    # The create of runs/gone.bin was in the emulator's hands (held back
    # by latency) when the mount was killed: it lands after the kill. The
    # file is removed as soon as the mount is back; the unlink used to
    # leave no tombstone (the node's create had no answer yet), so the
    # file stayed on Drive for good.
    make = mounts
    m = make(opts="write_back=0,poll_interval=1,drain_timeout=30").start()
    os.makedirs(m.p("runs"))
    with open(m.p("runs/first"), "wb") as f:
        f.write(b"makes runs/ on Drive")
    assert m.sync().returncode == 0
    emulator.set_faults({"latency_ms": 1500})
    stats0 = emulator.stats()["requests"].get("upload_multipart", 0)
    with open(m.p("runs/gone.bin"), "wb") as f:
        f.write(b"x" * 5000)
    mountlib.wait_for(lambda: emulator.stats()["requests"].get("upload_multipart", 0) > stats0,
                      30, "the create request to reach the emulator")
    m.kill9()
    emulator.clear_faults()
    mountlib.wait_for(lambda: live_at(emulator, m.folder, "runs/gone.bin"), 30,
                      "the cut create to land")
    m.start()
    os.unlink(m.p("runs/gone.bin"))
    assert m.sync().returncode == 0
    time.sleep(12)   # past recovery's settle time, should anything wait for it
    assert m.sync().returncode == 0
    assert not live_at(emulator, m.folder, "runs/gone.bin"), m.diag()


def test_opening_a_big_uncached_file_for_writing_waits_while_bytes_arrive(mounts, emulator):
    # r+b of a file not in the cache downloads all of it first. That wait
    # used to be capped at read_timeout in total, so a file taking longer
    # than that to download could not be opened for writing (EIO) although
    # Drive kept answering; read_timeout is about getting nothing.
    make = mounts
    m = make(opts="write_back=0.2,poll_interval=1,drain_timeout=30,read_timeout=3").start()
    os.makedirs(m.p("runs"))
    data = os.urandom(12 << 20)
    with open(m.p("runs/big"), "wb") as f:
        f.write(data)
    assert m.sync().returncode == 0
    m.stop()
    m.start(cache=os.path.join(m.tmp, "cache-empty"))
    emulator.set_faults({"bandwidth": 2_000_000})   # about 6 s for 12 MB
    with open(m.p("runs/big"), "r+b") as f:
        f.write(b"patched")
    emulator.clear_faults()
    assert open(m.p("runs/big"), "rb").read() == b"patched" + data[7:]


def test_a_memmap_written_back_after_its_close_reaches_drive(mount):
    # numpy.memmap: the file is closed right after mmap, the mapping is
    # written, then unmapped. The kernel writes it back after the close in
    # parallel WRITEs; each one that came while the first was copying the
    # closed version opened it again as a writer of its own, so the version
    # never closed: Drive kept the zeros, --sync said done, and no later
    # write of the path ever reached Drive.
    import mmap
    import random
    mount.start()
    os.makedirs(mount.p("runs"))
    n = 8 << 20
    rng = random.Random(1)
    for k in range(2):
        p = mount.p("runs/feat%d.npy" % k)
        shadow = bytearray(n)
        with open(p, "w+b") as f:
            f.seek(n - 1)
            f.write(b"\0")
            f.flush()
            mm = mmap.mmap(f.fileno(), n)
        for _ in range(250):
            off = rng.randrange(0, n - 100)
            b = rng.randbytes(100)
            mm[off:off + 100] = b
            shadow[off:off + 100] = b
        mm.close()
        assert open(p, "rb").read() == shadow
        wait_on_drive(mount.emu, mount.folder, "runs/feat%d.npy" % k,
                      bytes(shadow), timeout=20)
    with open(mount.p("runs/feat0.npy"), "wb") as f:  # the path still works
        f.write(b"later")
    wait_on_drive(mount.emu, mount.folder, "runs/feat0.npy", b"later", timeout=20)


def test_a_reader_sees_this_mount_s_rewrites_as_on_a_local_disk(mount):
    # A reader open while the file is rewritten here: an edit while the
    # previous version was still queued, then an O_TRUNC rewrite. The
    # reader kept the old version's bytes while the kernel told it the new
    # size: 50 bytes of "1" instead of 50 of "3".
    mount.start(extra="write_back=5")
    os.makedirs(mount.p("runs"))
    p = mount.p("runs/f.bin")
    with open(p, "wb") as f:
        f.write(b"1" * 10000)
    rd = os.open(p, os.O_RDONLY)
    try:
        assert os.pread(rd, 4, 0) == b"1111"
        with open(p, "r+b") as w:
            w.write(b"2222")
        assert os.pread(rd, 5, 0) == b"22221"
        with open(p, "wb") as w:
            w.write(b"3" * 50)
        time.sleep(1.5)  # past the kernel's attribute cache
        assert os.fstat(rd).st_size == 50
        assert os.pread(rd, 100, 0) == b"3" * 50
        with open(p, "r+b") as w:  # h5py: ftruncate, then write
            w.truncate(20)
            w.seek(10)
            w.write(b"4" * 20)
        assert os.pread(rd, 100, 0) == b"3" * 10 + b"4" * 20
    finally:
        os.close(rd)
