"""test_sched_mounts.py — vectur-sched on vectur-mounts of one Drive folder
(issue #6), against the Drive emulator.

test_a_stage_done_on_drive_has_its_outputs_on_drive checks the order the
scheduler records a result in (the stage lock's release barrier first);
test_a_lock_whose_creator_died_before_writing_is_broken_on_its_mount that a
lock showing only the mount's own holder JSON is not taken for a live
holder."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mountlib  # noqa: E402
from mountlib import Mount, DriveView, wait_for  # noqa: E402

SCHED = os.path.join(mountlib.BIN, "vectur-sched")
GRAPH = "experiments/work_graph.json"
TTL = 5
MOUNT_OPTS = "write_back=0.2,poll_interval=1,drain_timeout=10,lock_ttl=%d" % TTL
FAST = {"VECTUR_PACER_RATE": "100"}
SCHED_ARGS = ["--poll", "0.5", "--grace", "2", "--lock-timeout", "300"]

_ok, _why = mountlib.can_run()
pytestmark = [
    pytest.mark.skipif(not _ok, reason=_why),
    pytest.mark.skipif(not os.access(SCHED, os.X_OK), reason="vectur-sched not built"),
]


# ---- a result reaches Drive only after the stage's outputs -------------------

def test_a_stage_done_on_drive_has_its_outputs_on_drive(emulator, tmp_path):
    """Uploads are not ordered across files, so if `done` were written
    before the stage lock's release barrier, Drive could hold the graph
    saying `done` while the stage's output is still on its way — and a
    machine lost then (an empty cache dir) would leave it so for good.
    Drive is sampled while a stage's 3 MB output uploads at 1 MB/s: at no
    moment may the graph on Drive say `done` without the output there."""
    m = Mount(emulator, str(tmp_path), opts=MOUNT_OPTS, env=FAST)
    graph = {"version": 1, "stages": [{"id": "big", "cmd": (
        'head -c 3000000 /dev/urandom > "$VECTUR_RUN_DIR/out.bin.tmp" && '
        'mv "$VECTUR_RUN_DIR/out.bin.tmp" "$VECTUR_RUN_DIR/out.bin"')}]}
    try:
        m.start()
        os.makedirs(m.p("experiments"))
        with open(m.p(GRAPH), "w") as f:
            json.dump(graph, f)
        assert m.sync().returncode == 0
        emulator.set_faults({"bandwidth": 1000000})
        snaps, stop = [], []

        def sample():
            while not stop:
                view = DriveView(emulator, m.folder)
                live = view.live_files()
                g = live[GRAPH][0]
                body = emulator.raw("GET", "/_emu/versions/%s/%d" % (
                    g["id"], len(view.versions_of(g["id"])) - 1)).body
                done = json.loads(body)["stages"][0].get("status") == "done"
                out = [f.get("md5Checksum") for f in live.get("runs/big/out.bin", [])]
                snaps.append((time.time(), done, out))
                time.sleep(0.05)
        t = threading.Thread(target=sample, daemon=True)
        t.start()
        r = subprocess.run([SCHED] + SCHED_ARGS, cwd=m.mnt, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        with open(m.p("runs/big/out.bin"), "rb") as f:
            want = mountlib.md5(f.read())
        wait_for(lambda: any(s[1] for s in snaps), 60, "done on Drive")
        stop.append(1)
        t.join(30)
        early = [s for s in snaps if s[1] and s[2] != [want]]
        assert not early, "the graph on Drive said done while runs/big/out.bin was %r " \
            "(want %s), %d times from %.2f" % (early[0][2], want, len(early), early[0][0])
        assert snaps[-1][2] == [want]
    finally:
        emulator.clear_faults()
        m.cleanup()


# ---- a lock whose creator died before writing its holder ---------------------

def test_a_lock_whose_creator_died_before_writing_is_broken_on_its_mount(emulator, tmp_path):
    """A scheduler killed between its O_CREAT|O_EXCL and writing its holder
    leaves a lock that shows only the mount's own holder JSON, whose pid is
    the (live) mount's; the mount renews that lease for as long as it
    lives. The next vectur-sched on that mount must judge it like any lock
    without a holder: after --lock-ttl, by its flock. (Found by the
    three-mount test: every worker waited on such a graph lock for good.)"""
    m = Mount(emulator, str(tmp_path), opts=MOUNT_OPTS, env=FAST)
    try:
        m.start()
        os.makedirs(m.p("experiments"))
        os.makedirs(m.p("locks/stages"))
        with open(m.p(GRAPH), "w") as f:
            json.dump({"version": 1, "stages": [{"id": "a", "cmd": "true"}]}, f)
        subprocess.run([mountlib.PYTHON, "-c", "import os; os.open('locks/work_graph.lock', "
                        "os.O_CREAT | os.O_EXCL | os.O_WRONLY)"], cwd=m.mnt, check=True)
        with open(m.p("locks/work_graph.lock")) as f:
            assert "mount_id" in json.load(f)
        t0 = time.time()
        r = subprocess.run([SCHED, "--lock-ttl", "3", "--lock-timeout", "60"], cwd=m.mnt,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        print("broken after %.1fs" % (time.time() - t0))
        with open(m.p(GRAPH)) as f:
            assert json.load(f)["stages"][0]["status"] == "done"
    finally:
        m.cleanup()
