"""tests/conftest.py — shared pytest fixtures for vectur's Python tests.

`emulator` starts a fresh Drive emulator (tests/emulator/drive-emulator) per
test with its own --data-dir, reading the base URL from its first stdout
line; `emulator_factory(**options)` starts more with extra CLI options
(fail_rate=0.1 -> --fail-rate 0.1; True -> a bare flag; lists repeat the
flag). Each Emulator object offers .url, .data_dir, .proc, .port, .control(),
.stats(), .reset_stats(), .set_faults(), .clear_faults(), .versions(),
.files(), .access_token(), .request() and .restart(); processes are ended by
PID at teardown. Standard library only (urllib, http.client)."""

import http.client
import json as _json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(TESTS_DIR, "emulator", "drive-emulator")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
REFRESH_TOKEN = "test-refresh-token"


class EmulatorError(Exception):
    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body[:500]))
        self.status = status
        self.body = body


class Response:
    """A finished HTTP exchange: status, headers (case-insensitive), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return _json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:200])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Drive's 308 "Resume Incomplete" is not a redirect.
    def redirect_request(self, *args, **kwargs):
        return None


class Emulator:
    def __init__(self, data_dir, args=(), log_path=None, ca_file=None):
        self.data_dir = str(data_dir)
        self.args = list(args)
        self.log_path = log_path or os.path.join(self.data_dir + ".log")
        self.ca_file = ca_file
        self.proc = None
        self.url = None
        self.port = 0
        self._token = None
        ctx = self.ssl_context()
        self._opener = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=ctx))

    # ---- process control ------------------------------------------------
    def start(self, port=None):
        port = self.port if port is None else port
        cmd = [PYTHON, EMULATOR, "--listen", "127.0.0.1:%d" % port,
               "--data-dir", self.data_dir] + self.args
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + 15
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not ready:
                self.stop()
                raise RuntimeError("emulator printed no URL in time; log:\n" + self.log_text())
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                self.proc.wait(5)
                raise RuntimeError("emulator exited (%s); log:\n%s" % (self.proc.returncode,
                                                                       self.log_text()))
            line += ch
        self.url = line.decode().strip()
        self.port = urllib.parse.urlsplit(self.url).port
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """End the emulator process (by its PID) and wait for it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        if proc.stdout:
            proc.stdout.close()
        self.proc = None

    def kill(self):
        self.stop(signal.SIGKILL)

    def restart(self, kill=False):
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the
        same port with the same data dir and options: the URL stays valid."""
        self.stop(signal.SIGKILL if kill else signal.SIGTERM)
        return self.start(self.port)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-20000:].decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- HTTP -------------------------------------------------------------
    def ssl_context(self):
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def raw(self, method, path, body=None, headers=None, timeout=60):
        """One request with urllib; never raises on HTTP status."""
        url = path if "://" in path else self.url + path
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with self._opener.open(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def request(self, method, path, json=None, body=None, headers=None, token=True,
                params=None, timeout=60):
        """A Drive API call: token=True adds a cached bearer token, a string
        uses that token, None/False sends none. params are added to the URL."""
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = "Bearer " + (token if isinstance(token, str)
                                                   else self._token or self.access_token())
        if json is not None:
            body = _json.dumps(json).encode()
            headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        if params:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(params)
        return self.raw(method, path, body, headers, timeout)

    def control(self, method, path, json=None):
        """A /_emu call; returns parsed JSON (or bytes), raises EmulatorError >= 400."""
        body = _json.dumps(json).encode() if json is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if not path.startswith("/"):
            path = "/" + path
        if not path.startswith("/_emu"):
            path = "/_emu" + path
        r = self.raw(method, path, body, headers)
        if r.status >= 400:
            raise EmulatorError(r.status, r.body.decode("utf-8", "replace"))
        if (r.headers.get("Content-Type") or "").startswith("application/json"):
            return r.json()
        return r.body

    def stats(self):
        return self.control("GET", "/_emu/stats")

    def reset_stats(self):
        return self.control("POST", "/_emu/stats/reset")

    def set_faults(self, faults):
        return self.control("POST", "/_emu/faults", faults)

    def clear_faults(self):
        return self.control("DELETE", "/_emu/faults")

    def versions(self):
        return self.control("GET", "/_emu/versions")

    def version_bytes(self, file_id, index):
        return self.control("GET", "/_emu/versions/%s/%d" % (file_id, index))

    def files(self):
        return self.control("GET", "/_emu/files")["files"]

    def info(self):
        return self.control("GET", "/_emu/info")

    def expire_tokens(self):
        return self.control("POST", "/_emu/expire-tokens")

    def access_token(self, refresh_token=REFRESH_TOKEN):
        """A fresh access token from the refresh grant (also cached for request())."""
        body = urllib.parse.urlencode({"grant_type": "refresh_token", "client_id": "test",
                                       "client_secret": "test",
                                       "refresh_token": refresh_token}).encode()
        r = self.raw("POST", "/token", body,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        if r.status != 200:
            raise EmulatorError(r.status, r.body.decode("utf-8", "replace"))
        self._token = r.json()["access_token"]
        return self._token

    # ---- small Drive helpers (raise EmulatorError on failure) ---------------
    def _ok(self, r, *good):
        if r.status not in (good or (200,)):
            raise EmulatorError(r.status, r.body.decode("utf-8", "replace"))
        return r.json() if r.body else None

    def create_folder(self, name, parent="root", fields="id,name,parents"):
        return self._ok(self.request("POST", "/drive/v3/files", params={"fields": fields}, json={
            "name": name, "mimeType": "application/vnd.google-apps.folder", "parents": [parent]}))

    def upload(self, name, data, parent="root", fields="*", metadata=None):
        """Create a file with content in one multipart request."""
        meta = {"name": name, "parents": [parent]}
        meta.update(metadata or {})
        boundary = "vectur-test-boundary-7d1c"
        body = (b"--" + boundary.encode() + b"\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                + _json.dumps(meta).encode() + b"\r\n--" + boundary.encode()
                + b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data
                + b"\r\n--" + boundary.encode() + b"--\r\n")
        return self._ok(self.request(
            "POST", "/upload/drive/v3/files", body=body,
            headers={"Content-Type": "multipart/related; boundary=" + boundary},
            params={"uploadType": "multipart", "fields": fields}))

    def download(self, file_id):
        r = self.request("GET", "/drive/v3/files/%s?alt=media" % file_id)
        if r.status != 200:
            raise EmulatorError(r.status, r.body.decode("utf-8", "replace"))
        return r.body

    def get(self, file_id, fields="*"):
        return self._ok(self.request("GET", "/drive/v3/files/%s" % file_id,
                                     params={"fields": fields}))

    def list_all(self, q=None, fields="nextPageToken,files(id,name,parents,trashed)",
                 page_size=1000, **extra):
        """Every page of a files.list, concatenated."""
        out, token = [], None
        while True:
            params = {"pageSize": page_size, "fields": fields}
            if q is not None:
                params["q"] = q
            if token:
                params["pageToken"] = token
            params.update(extra)
            page = self._ok(self.request("GET", "/drive/v3/files", params=params))
            out += page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return out

    def connection(self, timeout=60):
        """A keep-alive http.client connection to the emulator."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=self.ssl_context())
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def _cli_args(options):
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


@pytest.fixture
def emulator_factory(tmp_path):
    """make(**options) -> a started Emulator; options become CLI flags except
    data_dir (default: a fresh dir), ca_file (trust this CA for https) and
    extra_args (a list passed verbatim)."""
    started = []

    def make(**options):
        data_dir = options.pop("data_dir", None) or str(tmp_path / ("emu%d" % len(started)))
        ca_file = options.pop("ca_file", None)
        extra = list(options.pop("extra_args", []))
        emu = Emulator(data_dir, _cli_args(options) + extra, ca_file=ca_file)
        started.append(emu)
        return emu.start()

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory):
    """A fresh emulator for one test; its request log goes to a file next to
    its data dir (emu.log_text())."""
    return emulator_factory()
