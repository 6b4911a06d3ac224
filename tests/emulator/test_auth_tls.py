"""test_auth_tls.py — service-account JWT grants (keys made and assertions
signed with the openssl CLI, checked by the emulator's pure-Python RS256)
and HTTPS serving with a certificate made by openssl."""

import base64
import hashlib
import json
import subprocess
import time
import urllib.parse

import pytest


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], input=input, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("sa", "other"):
        key = d / (name + ".key.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
        pub = d / (name + ".pub.pem")
        openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
        out[name] = {"key": key, "pub": pub}
    cert = d / "sa.cert.pem"
    openssl("req", "-x509", "-key", str(out["sa"]["key"]), "-subj", "/CN=sa", "-days", "1",
            "-out", str(cert))
    out["sa"]["cert"] = cert
    rsa_pub = d / "sa.rsapub.pem"
    openssl("rsa", "-in", str(out["sa"]["key"]), "-RSAPublicKey_out", "-out", str(rsa_pub))
    out["sa"]["rsa_pub"] = rsa_pub
    sa_json = d / "sa.json"
    sa_json.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": out["sa"]["key"].read_text(),
        "client_email": "vectur@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"}))
    out["sa"]["json"] = sa_json
    return out


def make_jwt(key_path, claims=None, header=None, now=None):
    now = int(now or time.time())
    c = {"iss": "vectur@p.iam.gserviceaccount.com", "scope": "https://www.googleapis.com/auth/drive",
         "aud": "https://oauth2.googleapis.com/token", "iat": now, "exp": now + 3600}
    c.update(claims or {})
    c = {k: v for k, v in c.items() if v is not None}
    h = header or {"alg": "RS256", "typ": "JWT"}
    signing_input = b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(c).encode())
    sig = openssl("dgst", "-sha256", "-sign", str(key_path), input=signing_input.encode())
    return signing_input + "." + b64url(sig)


def jwt_grant(emu, assertion):
    body = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": assertion}).encode()
    return emu.raw("POST", "/token", body, {"Content-Type": "application/x-www-form-urlencoded"})


def test_jwt_grant(emulator_factory, keys):
    emu = emulator_factory(quiet=True, jwt_public_key=str(keys["sa"]["pub"]))
    r = jwt_grant(emu, make_jwt(keys["sa"]["key"], {"scope": "https://www.googleapis.com/auth/drive.file"}))
    assert r.status == 200, r
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["scope"].endswith("drive.file")
    assert emu.request("GET", "/drive/v3/files", token=tok["access_token"]).status == 200


@pytest.mark.parametrize("case", ["tampered", "other_key", "expired", "no_aud", "too_long",
                                  "alg_none", "garbage"])
def test_bad_jwt_is_invalid_grant(emulator_factory, keys, case):
    emu = emulator_factory(quiet=True, jwt_public_key=str(keys["sa"]["pub"]))
    key = keys["sa"]["key"]
    if case == "tampered":
        good = make_jwt(key)
        h, p, s = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=="))
        claims["iss"] = "evil@x"
        assertion = h + "." + b64url(json.dumps(claims).encode()) + "." + s
    elif case == "other_key":
        assertion = make_jwt(keys["other"]["key"])
    elif case == "expired":
        assertion = make_jwt(key, now=time.time() - 7200)
    elif case == "no_aud":
        assertion = make_jwt(key, {"aud": None})
    elif case == "too_long":
        assertion = make_jwt(key, {"exp": int(time.time()) + 7200})
    elif case == "alg_none":
        assertion = make_jwt(key, header={"alg": "none", "typ": "JWT"})
    else:
        assertion = "not.a.jwt"
    r = jwt_grant(emu, assertion)
    assert r.status == 400 and r.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("form", ["cert", "json", "rsa_pub"])
def test_jwt_key_file_forms(emulator_factory, keys, form):
    emu = emulator_factory(quiet=True, jwt_public_key=str(keys["sa"][form]))
    assert jwt_grant(emu, make_jwt(keys["sa"]["key"])).status == 200


def test_jwt_keys_added_at_run_time(emulator, keys):
    assertion = make_jwt(keys["other"]["key"])
    assert jwt_grant(emulator, assertion).status == 400  # no keys configured
    emulator.raw("POST", "/_emu/jwt-keys", keys["other"]["pub"].read_bytes())
    assert jwt_grant(emulator, assertion).status == 200


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "tls.crt", d / "tls.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
            "-subj", "/CN=localhost", "-days", "1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:www.googleapis.com")
    return crt, key


def test_tls_serving(emulator_factory, tls_cert):
    crt, key = tls_cert
    emu = emulator_factory(quiet=True, tls_cert=str(crt), tls_key=str(key), ca_file=str(crt))
    assert emu.url.startswith("https://127.0.0.1:")
    data = bytes(range(256)) * 5000
    f = emu.upload("tls.bin", data)
    assert f["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert emu.download(f["id"]) == data
    r = emu.request("GET", "/drive/v3/files/%s?alt=media" % f["id"], headers={"Range": "bytes=5-9"})
    assert r.status == 206 and r.body == data[5:10]
    # Resumable sessions point back at https.
    r = emu.request("POST", "/upload/drive/v3/files", json={"name": "r"},
                    params={"uploadType": "resumable"})
    assert r.headers["Location"].startswith("https://")
    # Keep-alive over TLS.
    conn = emu.connection()
    for _ in range(3):
        conn.request("GET", "/drive/v3/files/root?fields=id",
                     headers={"Authorization": "Bearer " + emu.access_token()})
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
