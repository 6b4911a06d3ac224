"""cli.py — command line: parse options, build the App (store, auth,
faults, API, control), bind, print the base URL as the first stdout line
once the socket accepts connections, serve until SIGTERM/SIGINT."""

import argparse
import atexit
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading

from .api import DriveAPI
from .auth import Auth
from .control import Control
from .faults import Faults, Stats
from .httpd import Server
from .store import Store
from .uploads import Sessions


class App:
    pass


class Log:
    """The request log: lines go through a bounded queue to a writer thread,
    so a stderr pipe nobody reads can never stall a request (lines are
    dropped instead)."""

    def __init__(self, quiet):
        self.quiet = quiet
        self.q = queue.Queue(maxsize=10000)
        if not quiet:
            threading.Thread(target=self._run, name="log", daemon=True).start()

    def __call__(self, *parts):
        if self.quiet:
            return
        try:
            self.q.put_nowait(" ".join(str(p) for p in parts))
        except queue.Full:
            pass

    def _run(self):
        while True:
            line = self.q.get()
            try:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                return


def parse_args(argv):
    p = argparse.ArgumentParser(prog="drive-emulator",
                                description="A local Google Drive v3 API emulator for tests.")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any free port)")
    p.add_argument("--data-dir", help="state and content directory (kept across restarts); "
                                      "default: a temp dir removed at exit")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--refresh-token", action="append", default=[],
                   help="accept this refresh token too (repeatable; test-refresh-token always works)")
    p.add_argument("--token-lifetime", type=int, default=3600, help="access token lifetime, seconds")
    p.add_argument("--jwt-public-key", action="append", default=[],
                   help="PEM public key / certificate / private key or service-account JSON to "
                        "verify RS256 JWT-bearer assertions (repeatable)")
    p.add_argument("--fail-rate", type=float, help="fraction of API requests answered with an error")
    p.add_argument("--fail-status", type=int, help="status of injected errors (default 500)")
    p.add_argument("--fail-reason", help="Drive reason of injected errors (default from status)")
    p.add_argument("--fail-kinds", help="comma-separated request kinds faults apply to (default all)")
    p.add_argument("--reset-rate", type=float, help="fraction of API requests whose connection is reset mid-body")
    p.add_argument("--latency-ms", type=float, help="delay before every API request")
    p.add_argument("--bandwidth", type=float, help="bytes/s cap on bodies, each direction")
    p.add_argument("--name-query-delay", type=float,
                   help="seconds a new file stays invisible to name-filtered lists")
    p.add_argument("--seed", type=int, help="random seed for faults")
    p.add_argument("--quiet", action="store_true", help="no request log on stderr")
    return p.parse_args(argv)


def _faults_from_args(a):
    cfg = {}
    for key in ("fail_rate", "fail_status", "fail_reason", "reset_rate", "latency_ms",
                "bandwidth", "name_query_delay", "seed"):
        v = getattr(a, key)
        if v is not None:
            cfg[key] = v
    if a.fail_kinds:
        cfg["fail_kinds"] = [k.strip() for k in a.fail_kinds.split(",") if k.strip()]
    return cfg


def _split_listen(s):
    host, _, port = s.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    data_dir = a.data_dir
    if data_dir:
        os.makedirs(data_dir, exist_ok=True)
    else:
        data_dir = tempfile.mkdtemp(prefix="drive-emu-")
        atexit.register(shutil.rmtree, data_dir, True)

    app = App()
    app.quiet = a.quiet
    app.log = log = Log(a.quiet)
    app.store = Store(data_dir, log)
    app.sessions = Sessions(data_dir)
    app.auth = Auth(data_dir, a.refresh_token, a.token_lifetime, a.jwt_public_key)
    try:
        app.faults = Faults(_faults_from_args(a))
    except ValueError as e:
        sys.exit("drive-emulator: %s" % e)
    app.stats = Stats()
    app.api = DriveAPI(app.store, app.sessions, app.auth, app.faults, log)
    app.control = Control(app)
    app.tls = bool(a.tls_cert)

    ctx = None
    if a.tls_cert:
        import ssl  # only when serving HTTPS: it is slow to import
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        ctx.set_alpn_protocols(["http/1.1"])  # Drive clients disable HTTP/2 anyway

    host, port = _split_listen(a.listen)
    server = Server((host, port), app, ctx)
    bound_port = server.server_address[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else (
        "[%s]" % host if ":" in host else host))
    app.url = "%s://%s:%d" % ("https" if ctx else "http", shown, bound_port)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The socket is bound and listening: connections queue from here on.
    sys.stdout.write(app.url + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        app.store.close()
    return 0
