"""auth.py — the OAuth 2 side: refresh-token and JWT-bearer grants on the
token endpoint, issued access tokens (persisted in data_dir/tokens.json so
a restart does not log clients out), and RS256 signature checks done with
the standard library only (DER parsing + PKCS#1 v1.5 verify via pow())."""

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import threading
import time

DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
DEFAULT_REFRESH_TOKEN = "test-refresh-token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

# ---- DER / PEM -------------------------------------------------------------

_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1


def _der(b, i):
    """Read one DER TLV at i: (tag, content bytes, next index)."""
    if i + 2 > len(b):
        raise ValueError("truncated DER")
    tag = b[i]
    ln = b[i + 1]
    i += 2
    if ln & 0x80:
        n = ln & 0x7F
        if n == 0 or n > 4:
            raise ValueError("bad DER length")
        ln = int.from_bytes(b[i:i + n], "big")
        i += n
    if i + ln > len(b):
        raise ValueError("truncated DER")
    return tag, b[i:i + ln], i + ln


def _der_seq(b):
    """Children of a constructed value as (tag, content) pairs."""
    out = []
    i = 0
    while i < len(b):
        tag, val, i = _der(b, i)
        out.append((tag, val))
    return out


def _rsa_from_pkcs1_public(content):
    items = _der_seq(content)
    return int.from_bytes(items[0][1], "big"), int.from_bytes(items[1][1], "big")


def _rsa_from_spki(content):
    alg, bits = _der_seq(content)[:2]
    algo = _der_seq(alg[1])
    if algo[0][0] != 0x06 or algo[0][1] != _RSA_OID:
        raise ValueError("not an RSA key")
    tag, seq, _ = _der(bits[1], 1)  # skip the unused-bits byte
    return _rsa_from_pkcs1_public(seq)


def _rsa_from_cert(content):
    tbs = _der_seq(content)[0][1]
    for tag, val in _der_seq(tbs):
        if tag == 0x30:
            try:
                inner = _der_seq(val)
                if inner and inner[0][0] == 0x30:
                    algo = _der_seq(inner[0][1])
                    if algo and algo[0] == (0x06, _RSA_OID):
                        return _rsa_from_spki(val)
            except (ValueError, IndexError):
                continue
    raise ValueError("no RSA key in certificate")


def _rsa_from_pkcs1_private(content):
    items = _der_seq(content)  # version, n, e, d, ...
    return int.from_bytes(items[1][1], "big"), int.from_bytes(items[2][1], "big")


def _rsa_from_pkcs8(content):
    items = _der_seq(content)  # version, algorithm, privateKey OCTET STRING
    tag, inner, _ = _der(items[2][1], 0)
    return _rsa_from_pkcs1_private(inner)


_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)


def load_public_keys(text):
    """(n, e) pairs from PEM text (public key, RSA public key, certificate,
    or a private key, whose public half is used) or a service-account JSON."""
    text = text.strip()
    if text.startswith("{"):
        text = json.loads(text).get("private_key", "")
    keys = []
    for kind, body in _PEM.findall(text):
        der = base64.b64decode("".join(body.split()))
        tag, content, _ = _der(der, 0)
        if kind == "PUBLIC KEY":
            keys.append(_rsa_from_spki(content))
        elif kind == "RSA PUBLIC KEY":
            keys.append(_rsa_from_pkcs1_public(content))
        elif kind == "CERTIFICATE":
            keys.append(_rsa_from_cert(content))
        elif kind == "RSA PRIVATE KEY":
            keys.append(_rsa_from_pkcs1_private(content))
        elif kind == "PRIVATE KEY":
            keys.append(_rsa_from_pkcs8(content))
    if not keys:
        raise ValueError("no RSA key found")
    return keys


# DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def rs256_verify(key, signing_input, signature):
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    m = pow(int.from_bytes(signature, "big"), e, n)
    em = m.to_bytes(k, "big")
    t = _SHA256_PREFIX + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return secrets.compare_digest(em, expected)


def _b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ---- tokens ----------------------------------------------------------------

class Auth:
    def __init__(self, data_dir, refresh_tokens=(), lifetime=3600, key_files=()):
        self.lock = threading.Lock()
        self.path = os.path.join(data_dir, "tokens.json")
        self.refresh_tokens = {DEFAULT_REFRESH_TOKEN, *refresh_tokens}
        self.lifetime = int(lifetime)
        self.access = {}  # token -> expiry (epoch seconds)
        self.keys = []
        for path in key_files:
            with open(path) as f:
                self.keys.extend(load_public_keys(f.read()))
        try:
            with open(self.path) as f:
                saved = json.load(f)
            now = time.time()
            self.access = {t: exp for t, exp in saved.get("access", {}).items() if exp > now}
            self.refresh_tokens -= set(saved.get("revoked", []))
            self.refresh_tokens |= set(saved.get("added", []))
            self._revoked = set(saved.get("revoked", []))
            self._added = set(saved.get("added", []))
        except (OSError, ValueError):
            self._revoked = set()
            self._added = set()

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"access": self.access, "revoked": sorted(self._revoked),
                       "added": sorted(self._added)}, f)
        os.replace(tmp, self.path)

    def _issue(self, scope):
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        with self.lock:
            now = time.time()
            self.access = {t: e for t, e in self.access.items() if e > now}
            self.access[token] = now + self.lifetime
            self._save()
        return 200, {"access_token": token, "expires_in": self.lifetime,
                     "token_type": "Bearer", "scope": scope}

    def token_grant(self, form):
        """Answer a token endpoint request: (status, JSON object)."""
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            rt = form.get("refresh_token")
            if not rt:
                return 400, {"error": "invalid_request",
                             "error_description": "Missing required parameter: refresh_token"}
            with self.lock:
                ok = rt in self.refresh_tokens
            if not ok:
                return 400, {"error": "invalid_grant",
                             "error_description": "Token has been expired or revoked."}
            return self._issue(form.get("scope") or DRIVE_SCOPE)
        if grant == JWT_GRANT:
            err, claims = self._check_jwt(form.get("assertion", ""))
            if err:
                return 400, {"error": "invalid_grant", "error_description": err}
            return self._issue(claims.get("scope") or DRIVE_SCOPE)
        return 400, {"error": "unsupported_grant_type",
                     "error_description": "Invalid grant_type: %s" % grant}

    def _check_jwt(self, assertion):
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: malformed assertion.", None
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
            sig = _b64url(parts[2])
        except (ValueError, binascii.Error):
            return "Invalid JWT: malformed assertion.", None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "Invalid JWT: malformed assertion.", None
        if header.get("alg") != "RS256":
            return "Invalid JWT: unsupported algorithm.", None
        signing_input = (parts[0] + "." + parts[1]).encode()
        with self.lock:
            keys = list(self.keys)
        if not any(rs256_verify(k, signing_input, sig) for k in keys):
            return "Invalid JWT Signature.", None
        now = time.time()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or exp <= now:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.", None
        if isinstance(iat, (int, float)) and (exp - iat > 3600 or iat > now + 300):
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.", None
        if not claims.get("aud"):
            return "Invalid JWT: No audience claim.", None
        if not claims.get("iss"):
            return "Invalid JWT: No issuer claim.", None
        return None, claims

    def check_bearer(self, header):
        if not header:
            return False
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        token = token.strip()
        with self.lock:
            exp = self.access.get(token)
        return exp is not None and exp > time.time()

    def expire_all(self):
        with self.lock:
            n = len(self.access)
            self.access = {}
            self._save()
        return n

    def add_keys(self, pem_text):
        keys = load_public_keys(pem_text)
        with self.lock:
            self.keys.extend(keys)
        return len(keys)

    def edit_refresh_tokens(self, add=(), revoke=()):
        with self.lock:
            for t in add:
                self.refresh_tokens.add(t)
                self._added.add(t)
                self._revoked.discard(t)
            for t in revoke:
                self.refresh_tokens.discard(t)
                self._revoked.add(t)
                self._added.discard(t)
            self._save()
            return sorted(self.refresh_tokens)
