"""Interop test: the real rclone (Debian's 1.60, `drive` backend) against the
Drive emulator.

If rclone, a client users already trust, works against the emulator, the
emulator is faithful enough to prove vectur against. rclone cannot be pointed
at another API host, so each rclone (and the emulator) runs under
`unshare -m` with a private /etc/hosts that maps Google's API names to
127.0.0.1 (tests/integration/rclone_ns.sh), and trusts a throwaway CA made here
with the openssl CLI through SSL_CERT_FILE. The emulator serves TLS on
127.0.0.1:443; the network namespace is shared, so nothing but loopback is
ever contacted and the machine's /etc/hosts is never touched.

rclone is configured only through RCLONE_CONFIG_EMU_* variables, with an
access token that has already expired: it must refresh before its first call.
"""

import datetime
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

# One emulator on 127.0.0.1:443 at a time: under pytest-xdist these tests
# share a worker (make integration runs with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("port443")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(REPO, "tests", "emulator", "drive-emulator")
NS_SCRIPT = os.path.join(HERE, "rclone_ns.sh")

# Names rclone's drive backend resolves: the API and upload host, and the
# OAuth token host (accounts.google.com only serves the browser login, mapped
# anyway so that nothing can leak out).
GOOGLE_HOSTS = ("www.googleapis.com", "oauth2.googleapis.com", "accounts.google.com")
REFRESH_TOKEN = "test-refresh-token"
REMOTE = "emu"
TOP = REMOTE + ":vectur-interop"

# rclone's drive backend switches from multipart to resumable uploads above
# the cutoff and sends chunks of chunk-size; both are rclone's defaults, pinned
# so the chunk count below does not drift with a newer rclone.
UPLOAD_CUTOFF = 8 << 20
CHUNK_SIZE = 8 << 20
BIG_SIZE = 50 << 20

RCLONE_TIMEOUT = 180  # seconds for one rclone run, the 50 MiB upload included
RCLONE_FLAGS = [
    "--timeout", "30s", "--contimeout", "10s",
    "--retries", "1", "--low-level-retries", "2",
    # rclone reads a bare number as KiB: say M.
    "--drive-upload-cutoff", "%dM" % (UPLOAD_CUTOFF >> 20),
    "--drive-chunk-size", "%dM" % (CHUNK_SIZE >> 20),
    "-vv",
]
LOG_TAIL = 60  # lines of a log shown when something fails


def _tail(text, n=LOG_TAIL):
    lines = text.splitlines()
    cut = "" if len(lines) <= n else "  [... %d lines cut ...]\n" % (len(lines) - n)
    return cut + "\n".join(lines[-n:])


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, timeout=60, **kw)


def _make_ca_and_cert(d):
    """A CA and a server certificate for GOOGLE_HOSTS (and 127.0.0.1), signed
    by it. Go ignores the CN: the names must be in subjectAltName."""
    ca_key, ca_pem = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, pem = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_pem,
          "-days", "2", "-subj", "/CN=vectur rclone-interop test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "req", *ec, "-keyout", key, "-out", csr,
          "-subj", "/CN=" + GOOGLE_HOSTS[0]])
    with open(ext, "w") as f:
        f.write("subjectAltName=%s,IP:127.0.0.1\n"
                % ",".join("DNS:" + h for h in GOOGLE_HOSTS))
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
          "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", pem])
    return ca_pem, pem, key


def _port_443_free():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 443))
        return True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    finally:
        s.close()


@pytest.fixture(scope="module")
def pki():
    """Temp dir with the CA, the server certificate and the hosts file;
    shared by the tests of this module, removed after them."""
    if os.geteuid() != 0:
        pytest.skip("needs root: unshare -m and a bind mount over /etc/hosts")
    for tool in ("rclone", "openssl", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (make deps installs it)" % tool)
    if not os.path.exists(EMULATOR):
        pytest.fail("the Drive emulator %s does not exist" % EMULATOR)
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("cannot make a private mount namespace here (unshare -m: %s)"
                    % probe.stderr.decode(errors="replace").strip())
    d = tempfile.mkdtemp(prefix="vectur-rclone-pki-")
    try:
        ca, cert, key = _make_ca_and_cert(d)
        hosts = os.path.join(d, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
            f.write("127.0.0.1 %s\n" % " ".join(GOOGLE_HOSTS))
        yield {"dir": d, "ca": ca, "cert": cert, "key": key, "hosts": hosts}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _in_ns(hosts, cmd):
    """cmd run in a new private mount namespace whose /etc/hosts is `hosts`;
    the script execs cmd, so the returned argv's PID is cmd's PID."""
    return ["unshare", "-m", "--propagation", "private", "bash", NS_SCRIPT, hosts, *cmd]


class Emulator:
    """The Drive emulator serving TLS on 127.0.0.1:443 inside its own private
    mount namespace, with its data dir under `work`."""

    def __init__(self, pki, work):
        self.pki = pki
        self.data = os.path.join(work, "emu-data")
        os.mkdir(self.data)
        self.out_path = os.path.join(work, "emu.stdout")
        self.err_path = os.path.join(work, "emu.stderr")
        self.proc = None
        self.url = None

    def start(self):
        cmd = [sys.executable, EMULATOR, "--listen", "127.0.0.1:443",
               "--data-dir", self.data,
               "--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"],
               "--refresh-token", REFRESH_TOKEN]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(_in_ns(self.pki["hosts"], cmd),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.out_path) as f:
                first = f.readline()
            if first.endswith("\n"):
                self.url = first.strip()
                return
            if self.proc.poll() is not None:
                err = self.stderr()
                if "Address already in use" in err:
                    pytest.skip("port 127.0.0.1:443 is taken by another process; "
                                "the rclone interop test needs it")
                pytest.fail("the emulator exited with %s before printing its URL:\n%s"
                            % (self.proc.returncode, _tail(err)))
            time.sleep(0.05)
        pytest.fail("the emulator printed no URL within 30 s:\n%s" % _tail(self.stderr()))

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def get(self, path):
        """GET an /_emu/ endpoint, checking the certificate like rclone does."""
        ctx = ssl.create_default_context(cafile=self.pki["ca"])
        with urllib.request.urlopen("https://127.0.0.1:443" + path, context=ctx,
                                    timeout=10) as r:
            return json.load(r)

    def stats(self):
        return self.get("/_emu/stats")

    def record(self, file_id):
        """The emulator's own record of a file (/_emu/versions): name, parents,
        trashed, deleted and its content versions."""
        recs = [f for f in self.get("/_emu/versions")["files"] if f["id"] == file_id]
        assert recs, "the emulator has no file %s" % file_id
        return recs[0]


def _count(stats, kind):
    """How many requests of `kind` (the emulator's request kinds: token,
    upload_start, upload_chunk, ...) a /_emu/stats snapshot counted."""
    return stats.get("requests", {}).get(kind, 0)


class Rclone:
    """Runs rclone in a private namespace with the emulator's hosts file,
    configured only by environment variables. Every run is logged to stdout,
    which pytest shows when a test fails."""

    def __init__(self, pki, work):
        self.hosts = pki["hosts"]
        home = os.path.join(work, "home")
        certdir = os.path.join(work, "no-certs")
        os.mkdir(home)
        os.mkdir(certdir)
        conf = os.path.join(work, "rclone.conf")
        open(conf, "w").close()
        expired = {"access_token": "expired-access-token", "token_type": "Bearer",
                   "refresh_token": REFRESH_TOKEN, "expiry": "2001-02-03T04:05:06Z"}
        # A fresh environment: no user config, no proxies, no system CAs.
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_CACHE_HOME": os.path.join(home, ".cache"),
            "RCLONE_CONFIG": conf,
            "SSL_CERT_FILE": pki["ca"],
            "SSL_CERT_DIR": certdir,
            "RCLONE_CONFIG_EMU_TYPE": "drive",
            "RCLONE_CONFIG_EMU_CLIENT_ID": "vectur-interop.apps.googleusercontent.com",
            "RCLONE_CONFIG_EMU_CLIENT_SECRET": "vectur-interop-secret",
            "RCLONE_CONFIG_EMU_SCOPE": "drive",
            "RCLONE_CONFIG_EMU_TOKEN": json.dumps(expired),
        }

    def run(self, *args, check=True):
        cmd = _in_ns(self.hosts, ["rclone", *RCLONE_FLAGS, *args])
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, env=self.env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=RCLONE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            err = (e.stderr or b"").decode(errors="replace")
            print("$ rclone %s  -> timed out after %d s\n%s"
                  % (" ".join(args), RCLONE_TIMEOUT, _tail(err)))
            raise AssertionError("rclone %s timed out after %d s; its stderr:\n%s"
                                 % (" ".join(args), RCLONE_TIMEOUT, _tail(err, 150)))
        err = p.stderr.decode(errors="replace")
        print("$ rclone %s  -> exit %d in %.1f s\n%s"
              % (" ".join(args), p.returncode, time.monotonic() - t0, _tail(err, 20)))
        if check and p.returncode != 0:
            raise AssertionError("rclone %s exited %d; its stderr:\n%s"
                                 % (" ".join(args), p.returncode, _tail(err, 150)))
        return p

    def out(self, *args):
        return self.run(*args).stdout.decode()

    def lsjson(self, path):
        """{path: entry} of the files (not dirs) under path, recursively."""
        entries = json.loads(self.out("lsjson", "-R", "--files-only", path))
        return {e["Path"]: e for e in entries}


@pytest.fixture
def drive(pki):
    """A fresh emulator (fresh data dir, zeroed stats) and an rclone to drive
    it. On failure pytest shows what this prints: the emulator's stderr tail."""
    work = tempfile.mkdtemp(prefix="vectur-rclone-")
    emu = Emulator(pki, work)
    try:
        if not _port_443_free():
            pytest.skip("port 127.0.0.1:443 is taken by another process; "
                        "the rclone interop test needs it")
        emu.start()
        yield emu, Rclone(pki, work), work
        assert emu.proc.poll() is None, "the emulator died (exit %s)" % emu.proc.returncode
    finally:
        emu.stop()
        print("--- emulator stderr (tail) ---\n" + _tail(emu.stderr()))
        shutil.rmtree(work, ignore_errors=True)


def _make_file(path, size, mtime_ns):
    """A file of `size` random bytes with mtime `mtime_ns`; returns its md5."""
    h = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return h.hexdigest()


def _ns(iso):
    dt = datetime.datetime.fromisoformat(iso)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


# Local files: name -> (size, mtime). Times in the past, with sub-second parts,
# so a server that stamps "now" or drops the time is caught.
FILES = {
    "empty.bin": (0, "2019-03-04T05:06:07.250+00:00"),
    "small.bin": (100 << 10, "2020-11-12T13:14:15.500+00:00"),
    "big.bin": (BIG_SIZE, "2021-05-06T07:08:09.125+00:00"),
}


def _make_local_files(work, names):
    src = os.path.join(work, "src")
    os.makedirs(src, exist_ok=True)
    local = {}
    for name in names:
        size, mtime = FILES[name]
        path = os.path.join(src, name)
        local[name] = {"path": path, "size": size, "mtime_ns": _ns(mtime),
                       "md5": _make_file(path, size, _ns(mtime))}
    return local


def _assert_mtime(entry, want_ns, what):
    got = datetime.datetime.fromisoformat(entry["ModTime"]).timestamp()
    assert abs(got - want_ns / 1e9) <= 1.0, (
        "%s: remote ModTime %s, local mtime %s" % (
            what, entry["ModTime"],
            datetime.datetime.fromtimestamp(want_ns / 1e9, datetime.timezone.utc).isoformat()))


def test_rclone_refreshes_expired_token_before_first_call(drive):
    emu, rclone, _ = drive
    rclone.run("mkdir", TOP)
    stats = emu.stats()
    assert _count(stats, "token") >= 1, (
        "rclone was given an expired access token, yet the emulator counted no "
        "token request: %s" % json.dumps(stats))
    assert rclone.out("lsf", REMOTE + ":") == "vectur-interop/\n"


def test_rclone_uploads_lists_and_reads_back(drive):
    emu, rclone, work = drive
    local = _make_local_files(work, FILES)
    rclone.run("mkdir", TOP)
    for name, f in local.items():
        rclone.run("copyto", f["path"], "%s/%s" % (TOP, name))

    # Only the big file is above the cutoff: one resumable session, sent in
    # ceil(50 MiB / 8 MiB) = 7 chunks.
    stats = emu.stats()
    assert _count(stats, "upload_start") >= 1, (
        "a %d MiB file should take the resumable path; stats: %s"
        % (BIG_SIZE >> 20, json.dumps(stats)))
    assert _count(stats, "upload_chunk") >= -(-BIG_SIZE // CHUNK_SIZE), (
        "stats: %s" % json.dumps(stats))

    assert sorted(rclone.out("lsf", "-R", TOP).splitlines()) == sorted(local)

    for name, f in local.items():
        data = rclone.run("cat", "%s/%s" % (TOP, name)).stdout
        assert len(data) == f["size"], "rclone cat %s: size" % name
        assert hashlib.md5(data).hexdigest() == f["md5"], "rclone cat %s: content" % name

    sums = {}
    for line in rclone.out("md5sum", TOP).splitlines():
        digest, name = line.split(None, 1)
        sums[name] = digest
    assert sums == {n: f["md5"] for n, f in local.items()}

    listed = rclone.lsjson(TOP)
    assert sorted(listed) == sorted(local)
    for name, f in local.items():
        assert listed[name]["Size"] == f["size"], "lsjson %s: Size" % name
        _assert_mtime(listed[name], f["mtime_ns"], "lsjson " + name)


def test_rclone_moves_server_side_and_deletes(drive):
    emu, rclone, work = drive
    local = _make_local_files(work, ["empty.bin", "small.bin"])
    rclone.run("mkdir", TOP)
    for name, f in local.items():
        rclone.run("copyto", f["path"], "%s/%s" % (TOP, name))
    before = rclone.lsjson(TOP)

    # Rename and move to another (new) folder in one step; a server-side move
    # keeps the file id, a download + upload would not.
    rclone.run("moveto", TOP + "/small.bin", TOP + "/moved/renamed.bin")
    after = rclone.lsjson(TOP)
    assert sorted(after) == ["empty.bin", "moved/renamed.bin"]
    moved = after["moved/renamed.bin"]
    assert moved["ID"] == before["small.bin"]["ID"], "moveto was not a server-side move"
    assert moved["Size"] == local["small.bin"]["size"]
    _assert_mtime(moved, local["small.bin"]["mtime_ns"], "moved file")
    data = rclone.run("cat", TOP + "/moved/renamed.bin").stdout
    assert hashlib.md5(data).hexdigest() == local["small.bin"]["md5"]
    assert len(emu.record(moved["ID"])["versions"]) == 1, "the move re-sent the content"

    # rclone trashes by default (--drive-use-trash): gone from listings, but
    # recoverable from Drive's trash.
    rclone.run("deletefile", TOP + "/moved/renamed.bin")
    assert sorted(rclone.lsjson(TOP)) == ["empty.bin"]
    rec = emu.record(moved["ID"])
    assert (rec["name"], rec["trashed"], rec["deleted"]) == ("renamed.bin", True, False)
    assert sorted(rclone.out("lsf", "-R", TOP).splitlines()) == ["empty.bin", "moved/"]
    # The file left is untouched.
    data = rclone.run("cat", TOP + "/empty.bin").stdout
    assert data == b""
