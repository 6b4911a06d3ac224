"""test_persistence.py — the emulator's state lives in --data-dir and
survives a restart (graceful or kill -9): files, content, every version,
trash and deletions, the root id, issued tokens, generated ids, the
version counter and the changes feed. Without --data-dir a temp dir is
used and removed at exit."""

import json
import os
import signal
import subprocess
import urllib.request

import pytest

from conftest import EMULATOR, PYTHON


def _snapshot(emu):
    files = emu.list_all(fields="nextPageToken,files(id,name,parents,trashed,md5Checksum,size,"
                               "version,createdTime,modifiedTime,appProperties)")
    return sorted(files, key=lambda f: f["id"])


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_state_survives_restart(emulator, kill):
    emu = emulator
    token = emu.access_token()
    root = emu.get("root", "id")["id"]
    start = emu.request("GET", "/drive/v3/changes/startPageToken").json()["startPageToken"]
    d = emu.create_folder("runs")
    a = emu.upload("a.ckpt", b"A" * 1000, d["id"], metadata={"appProperties": {"step": "1"}})
    emu.request("PATCH", "/upload/drive/v3/files/%s?uploadType=media" % a["id"], body=b"A2")
    t = emu.upload("trashed", b"T", d["id"])
    emu.request("PATCH", "/drive/v3/files/" + t["id"], json={"trashed": True})
    x = emu.upload("deleted", b"X", d["id"])
    emu.request("DELETE", "/drive/v3/files/" + x["id"])
    spare = emu.request("GET", "/drive/v3/files/generateIds?count=1").json()["ids"][0]
    before = _snapshot(emu)
    versions = emu.versions()
    changes = emu.request("GET", "/drive/v3/changes", params={"pageToken": start, "fields": "*"}).json()
    url = emu.url

    emu.restart(kill=kill)

    assert emu.url == url
    assert emu.request("GET", "/drive/v3/files/root?fields=id", token=token).json()["id"] == root
    assert _snapshot(emu) == before
    assert emu.versions() == versions
    assert emu.download(a["id"]) == b"A2"
    assert emu.version_bytes(a["id"], 0) == b"A" * 1000
    assert emu.request("GET", "/drive/v3/files/" + x["id"]).status == 404
    again = emu.request("GET", "/drive/v3/changes", params={"pageToken": start, "fields": "*"}).json()
    assert again == changes
    # Counters continue where they were.
    b = emu.upload("b", b"B", d["id"])
    assert int(b["version"]) > max(int(f["version"]) for f in before)
    newer = emu.request("GET", "/drive/v3/changes",
                        params={"pageToken": changes["newStartPageToken"], "fields": "*"}).json()
    assert [c["fileId"] for c in newer["changes"]] == [b["id"]]
    # Generated ids stay usable exactly once.
    assert emu.request("POST", "/drive/v3/files", json={"id": spare, "name": "s"}).status == 200
    assert emu.request("POST", "/drive/v3/files", json={"id": a["id"], "name": "s"}).status == 409


def test_faults_and_stats_do_not_persist(emulator):
    emulator.set_faults({"latency_ms": 1})
    emulator.request("GET", "/drive/v3/files")
    emulator.restart()
    assert emulator.control("GET", "/_emu/faults") == {}
    assert emulator.stats()["total"] == 0


def test_without_data_dir_a_temp_dir_is_used_and_removed(tmp_path):
    proc = subprocess.Popen([PYTHON, EMULATOR, "--listen", "127.0.0.1:0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:")
        info = json.loads(urllib.request.urlopen(url + "/_emu/info", timeout=10).read())
        assert os.path.isdir(info["data_dir"])
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()
    assert not os.path.exists(info["data_dir"])
