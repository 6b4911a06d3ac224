"""test_mount_regressions.py — one test per bug found in vectur-mount, each
failing before its fix. Uses the Mount helper of test_mount_basic.py, and
mountlib's where a test needs several mounts or kill -9."""

import json
import os
import sys

import pytest

from test_mount_basic import Mount, wait_on_drive, pytestmark  # noqa: F401

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
