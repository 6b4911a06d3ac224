"""Runs the C test build/tests/test_drive_upload against the emulator."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
BUILD = os.path.join(REPO, "build-san" if BIN.rstrip("/").endswith("-san") else "build")


def test_drive_upload_c_suite(emulator):
    r = subprocess.run([os.path.join(BUILD, "tests", "test_drive_upload")],
                       env=dict(os.environ, VECTUR_TEST_ENDPOINT=emulator.url),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert " 0 failed" in out and "skipped" not in out, out
