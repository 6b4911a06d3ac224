"""test_mount_regressions.py — one test per bug found in vectur-mount, each
failing before its fix. Uses the Mount helper of test_mount_basic.py."""

import json
import os
import subprocess
import threading
import time

from test_mount_basic import (Mount, VM, drive_lookup, md5_bytes,  # noqa: F401
                              wait_on_drive, pytestmark)

import pytest


@pytest.fixture
def mount(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    yield m
    m.cleanup()


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
