"""test_drive_auth.py — drive/auth.c (OAuth refresh, service-account JWT,
write-back, one refresh for many threads) against the Drive emulator.

The checks themselves are the emulator tests at the end of
tests/unit/test_auth.c; `make unit` runs that binary without an emulator and
they print "skipped". Here the emulator is started with a short token
lifetime and a service-account public key made for this run, and the binary
is run again with VECTUR_TEST_ENDPOINT (and friends) set, so nothing is
skipped. The emulator comes from tests/conftest.py's emulator_factory; the
binary from the build directory matching $VECTUR_BIN (bin -> build,
bin-san -> build-san), or $VECTUR_BUILD.
"""

import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN_LIFETIME = 5  # seconds: long enough for a test, short enough to wait out


def _build_dir():
    if os.environ.get("VECTUR_BUILD"):
        return os.environ["VECTUR_BUILD"]
    bin_dir = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
    name = "build-san" if os.path.basename(bin_dir.rstrip("/")) == "bin-san" else "build"
    return os.path.join(REPO, name)


TEST_AUTH = os.path.join(_build_dir(), "tests", "test_auth")


@pytest.fixture
def service_account(tmp_path):
    """A fresh RSA key and a service-account key file around it."""
    pem = tmp_path / "sa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(pem)],
                   check=True, capture_output=True, timeout=60)
    key = tmp_path / "sa.json"
    key.write_text(json.dumps({
        "type": "service_account",
        "project_id": "vectur-test",
        "private_key_id": "test",
        "private_key": pem.read_text(),
        "client_email": "vectur-test@vectur-test.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    key.chmod(0o600)
    return pem, key


@pytest.fixture
def auth_emulator(emulator_factory, service_account):
    """An emulator (tests/conftest.py) trusting the service account's key,
    its tokens living TOKEN_LIFETIME seconds."""
    pem, _ = service_account
    return emulator_factory(quiet=True, token_lifetime=TOKEN_LIFETIME,
                            jwt_public_key=str(pem))


def test_auth_against_emulator(auth_emulator, service_account):
    if not os.access(TEST_AUTH, os.X_OK):
        pytest.skip("%s not built (make unit)" % TEST_AUTH)
    _, key = service_account
    env = dict(os.environ,
               VECTUR_TEST_ENDPOINT=auth_emulator.url,
               VECTUR_TEST_TOKEN_LIFETIME=str(TOKEN_LIFETIME),
               VECTUR_TEST_SA_FILE=str(key))
    r = subprocess.run([TEST_AUTH], env=env, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "skipped" not in r.stdout, out
    assert " 0 failed" in r.stdout, out
