"""test_mount_regressions.py — one test per bug found in vectur-mount, each
failing before its fix. Uses the Mount helper of test_mount_basic.py."""

import json
import os

from test_mount_basic import Mount, wait_on_drive, pytestmark  # noqa: F401

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
