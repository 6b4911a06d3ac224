"""test_cache_emulator.py — cache/ against the Drive emulator: runs the C
test binary build/tests/test_cache_drive (uploads after close, fsync,
superseding while uploading, resume after SIGKILL, 10% faults without
duplicates, cold reads, the changes feed) with VECTUR_TEST_ENDPOINT set,
then checks Drive-wide invariants from the emulator's own records:
no duplicate live names in any folder, and no file version whose size
was never written by the test (a torn version would show up there)."""

import collections
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
BUILD = os.path.join(REPO, "build-san" if BIN.rstrip("/").endswith("-san") else "build")
TEST = os.path.join(BUILD, "tests", "test_cache_drive")

TOKEN = ('{"access_token":"x","token_type":"Bearer",'
         '"refresh_token":"test-refresh-token","expiry":"2000-01-01T00:00:00Z"}')


def write_config(path):
    with open(path, "w") as f:
        f.write("[emu]\ntype = drive\nscope = drive\ntoken = %s\n" % TOKEN)
    os.chmod(path, 0o600)


# The binary's tests in SHARDS parallel runs, each on its own emulator
# (make test runs pytest in several processes); every test is in one.
SHARDS = 4


@pytest.mark.parametrize("shard", range(SHARDS))
def test_cache_against_emulator(emulator, tmp_path, shard):
    conf = tmp_path / "rclone.conf"
    write_config(conf)
    env = dict(os.environ, VECTUR_TEST_ENDPOINT=emulator.url,
               VECTUR_TEST_RCLONE_CONFIG=str(conf),
               VECTUR_TEST_SHARD="%d/%d" % (shard, SHARDS))
    r = subprocess.run([TEST], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=900)
    out = r.stdout.decode("utf-8", "replace")
    print(out)
    assert r.returncode == 0, out
    assert " 0 failed" in out and "skipped" not in out, out

    # Drive-wide: the cache never left two live files of one name in a
    # folder (retried creates use pre-generated ids).
    names = collections.Counter()
    for f in emulator.versions()["files"]:
        if f["deleted"] or f["trashed"]:
            continue
        for p in f["parents"]:
            names[(p, f["name"])] += 1
    dups = [k for k, n in names.items() if n > 1]
    assert not dups, dups

    # Every stored version of a test file has a size the test wrote: a
    # version cut short by a kill or a fault would not.
    sizes = {"ckpt.bin": {3 << 20}, "big.bin": {12 << 20},
             "resume.bin": {16 << 20}, "remote.bin": {200 << 20},
             "log.txt": {7, 14}}
    for f in emulator.versions()["files"]:
        want = sizes.get(f["name"])
        if not want:
            continue
        for v in f["versions"]:
            assert int(v["size"]) in want, (f["name"], v)


def test_cache_drive_binary_skips_without_endpoint():
    env = dict(os.environ)
    env.pop("VECTUR_TEST_ENDPOINT", None)
    r = subprocess.run([TEST], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert r.returncode == 0
    assert b"skipped" in r.stdout
