"""httpd.py — the HTTP/1.1 server: one thread per connection, keep-alive,
Expect: 100-continue answered lazily (only when the body is first read),
chunked request bodies, Content-Length on every response, zero-copy
downloads with sendfile, and where faults bite the wire: latency, resets
part-way through a request or response body, and bandwidth caps."""

import os
import socket
import sys
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .httpd_types import json_response, error_response
from .util import DriveError, AbortConnection

SMALL_BODY = 1 << 20
REASONS = {308: "Resume Incomplete", 499: "Client Closed Request"}


class Body:
    """The request body as a stream: Content-Length or chunked, with the
    100 Continue sent on first read, the upload throttle, and an injected
    reset after `reset_at` bytes."""

    def __init__(self, handler, length, chunked, throttle=None, reset_at=None):
        self.h = handler
        self.length = None if chunked else length
        self.chunked = chunked
        self.remaining = 0 if chunked else length
        self.chunk_left = 0
        self.done = (not chunked) and length == 0
        self.consumed = 0
        self.throttle = throttle
        self.reset_at = reset_at
        self.reset_fired = False

    @property
    def has_body(self):
        return self.chunked or (self.length or 0) > 0

    def _continue(self):
        if self.h.pending_100:
            self.h.pending_100 = False
            try:
                self.h.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError as e:
                raise AbortConnection(str(e))

    def _readline(self):
        try:
            line = self.h.rfile.readline(4096)
        except OSError as e:
            raise AbortConnection(str(e))
        if not line:
            raise AbortConnection("client closed mid-body")
        return line

    def _next_chunk(self):
        line = self._readline()
        try:
            size = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise AbortConnection("bad chunk header")
        if size == 0:
            while self._readline() not in (b"\r\n", b"\n"):
                pass  # trailers
            self.done = True
        else:
            self.chunk_left = size

    def readinto(self, mv):
        if self.done:
            return 0
        self._continue()
        if self.chunked and self.chunk_left == 0:
            self._next_chunk()
            if self.done:
                return 0
        n = len(mv)
        n = min(n, self.chunk_left if self.chunked else self.remaining)
        if self.reset_at is not None:
            if self.consumed >= self.reset_at:
                self.reset_fired = True
                raise AbortConnection("injected reset")
            n = min(n, self.reset_at - self.consumed)
        piece = self.throttle.piece() if self.throttle else 0
        if piece:
            n = min(n, piece)
        try:
            k = self.h.rfile.readinto(mv[:n])
        except OSError as e:
            raise AbortConnection(str(e))
        if not k:
            raise AbortConnection("client closed mid-body")
        if piece:
            self.throttle.consume(k)
        self.consumed += k
        if self.chunked:
            self.chunk_left -= k
            if self.chunk_left == 0:
                self._readline()  # CRLF after the chunk data
        else:
            self.remaining -= k
            if self.remaining == 0:
                self.done = True
        return k

    def read_all(self, limit):
        out = bytearray()
        buf = memoryview(bytearray(65536))
        while True:
            n = self.readinto(buf)
            if not n:
                return bytes(out)
            out += buf[:n]
            if len(out) > limit:
                raise DriveError(413, "uploadTooLarge", "Request body too large.")

    def drain(self):
        total = 0
        buf = memoryview(bytearray(1 << 20))
        while True:
            n = self.readinto(buf)
            if not n:
                return total
            total += n


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "kind", "base_url")

    def __init__(self, method, path, query, headers, body, kind, base_url):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.kind = kind
        self.base_url = base_url


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vectur-drive-emulator"
    sys_version = ""
    rbufsize = 65536
    disable_nagle_algorithm = True
    timeout = 300

    # -- plumbing over BaseHTTPRequestHandler --
    def parse_request(self):
        self.pending_100 = False
        return super().parse_request()

    def handle_expect_100(self):
        # Defer the 100 until a handler reads the body: an early error
        # (auth, fault) then goes out without inviting the body.
        self.pending_100 = True
        return True

    def log_message(self, fmt, *args):
        self.server.app.log("emu %s %s" % (self.address_string(), fmt % args))

    def log_request(self, code="-", size="-"):
        pass  # logged by _log with the kind instead

    def _log(self, kind, status, t0):
        if not self.server.app.quiet:
            self.server.app.log("emu %s %s %s %s %d %.1fms" % (
                time.strftime("%H:%M:%S"), kind, self.command, self.path[:160], status,
                (time.monotonic() - t0) * 1000))

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _abort(self):
        """Drop the connection with a TCP reset (SO_LINGER 0, then close;
        the descriptor really closes once rfile/wfile are released)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass

    # -- one request --
    def _dispatch(self):
        app = self.server.app
        t0 = time.monotonic()
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        query = {}
        for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(k, v)
        te = self.headers.get("Transfer-Encoding", "").lower()
        chunked = "chunked" in te
        try:
            length = int(self.headers.get("Content-Length", "0") or "0")
            if length < 0:
                raise ValueError
        except ValueError:
            self._send(json_response(400, DriveError(400, "badRequest", "Bad Content-Length").body()))
            self.close_connection = True
            return
        host = self.headers.get("Host") or "%s:%s" % self.server.server_address[:2]
        base_url = "%s://%s" % ("https" if app.tls else "http", host)

        if path.startswith("/_emu/") or path == "/_emu":
            body = Body(self, length, chunked)
            req = Request(self.command, path, query, self.headers, body, "control", base_url)
            try:
                resp = app.control.handle(req)
            except DriveError as e:
                resp = error_response(e)
            except AbortConnection:
                self._abort()
                return
            self._finish_body(body)
            self._send(resp)
            self._log("control", resp.status, t0)
            return

        kind, fn, needs_auth = app.api.route(self.command, path, query, self.headers)
        app.stats.count(kind)
        has_body = chunked or length > 0
        decision = app.faults.decide(kind, has_body)
        if decision.latency:
            time.sleep(decision.latency)
        reset_at = None
        if decision.reset and decision.reset[0] == "request":
            spec = decision.reset[1]
            if isinstance(spec, dict):
                reset_at = spec["bytes"]
            else:
                reset_at = int(spec * (length if not chunked else 65536))
            if not chunked:
                # Always part-way: the request is lost before it is acted on.
                reset_at = max(0, min(reset_at, length - 1))
        body = Body(self, length, chunked, app.faults.up, reset_at)
        req = Request(self.command, path, query, self.headers, body, kind, base_url)
        try:
            if reset_at is not None and not has_body:
                raise AbortConnection("injected reset")  # the request never arrived whole
            if decision.error is not None:
                if kind == "token":  # OAuth's error shape, not Drive's
                    resp = json_response(decision.error.status, {
                        "error": decision.error.reason,
                        "error_description": decision.error.message})
                else:
                    resp = error_response(decision.error)
            elif needs_auth and not app.auth.check_bearer(self.headers.get("Authorization")):
                resp = error_response(DriveError(
                    401, "authError",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                    "Authorization", "header"))
            else:
                resp = fn(req)
            if reset_at is not None and not body.reset_fired:
                # The handler did not read the body that far (or a chunked
                # body ended first): fire the reset now.
                if not body.done:
                    body.drain()
                raise AbortConnection("injected reset")
            self._finish_body(body)
        except AbortConnection:
            app.stats.add_bytes(body.consumed, 0)
            self._log(kind, 0, t0)
            self._abort()
            return
        except DriveError as e:
            resp = error_response(e)
            try:
                self._finish_body(body)
            except AbortConnection:
                self._abort()
                return
        except Exception as e:  # a bug: answer like Drive's backend would
            traceback.print_exc()
            resp = error_response(DriveError(500, "backendError", "Backend Error: %s" % e))
            self.close_connection = True
        cut = None
        if decision.reset and decision.reset[0] == "response":
            spec = decision.reset[1]
            cut = spec["bytes"] if isinstance(spec, dict) else int(spec * resp.length)
        sent = self._send(resp, app.faults.down, cut)
        app.stats.add_bytes(body.consumed, sent)
        self._log(kind, resp.status, t0)

    def _finish_body(self, body):
        """Leave the connection ready for the next request."""
        if body.done or not body.has_body:
            return
        if self.pending_100:
            # The client is waiting for our go-ahead and has not sent the
            # body: answer and close rather than read what never comes.
            self.close_connection = True
            return
        body.drain()

    def _send(self, resp, throttle=None, cut=None):
        """Write the response; returns body bytes sent. cut: reset the
        connection after that many body bytes."""
        reason = resp.reason or REASONS.get(resp.status) or self.responses.get(resp.status, ("",))[0]
        head = ["HTTP/1.1 %d %s" % (resp.status, reason),
                "Date: " + self.date_time_string(),
                "Server: " + self.server_version]
        if resp.content_type:
            head.append("Content-Type: " + resp.content_type)
        head.append("Content-Length: %d" % resp.length)
        for k, v in resp.headers:
            head.append("%s: %s" % (k, v))
        if self.close_connection:
            head.append("Connection: close")
        header = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        is_head = self.command == "HEAD"
        length = 0 if is_head else resp.length
        if cut is not None and cut >= length:
            cut = max(0, length - 1) if length else 0
        if cut is not None and length == 0:
            # Nothing but headers to lose: drop the response entirely.
            raise_abort = True
        else:
            raise_abort = False
        if raise_abort:
            self._abort()
            return 0
        piece = throttle.piece() if throttle else 0
        sock = self.connection
        try:
            if resp.file_path is None:
                body = b"" if is_head else resp.body
                if cut is None and not piece:
                    sock.sendall(header + body)
                    return len(body)
                sock.sendall(header)
                return self._send_pieces(lambda off, n: body[off:off + n], length, piece,
                                         throttle, cut)
            sock.sendall(header)
            if length == 0:
                return 0
            with open(resp.file_path, "rb") as f:
                if cut is None and not piece and not self.server.app.tls:
                    sent = sock.sendfile(f, resp.offset, length)
                    return sent
                fd = f.fileno()
                return self._send_pieces(lambda off, n: os.pread(fd, n, resp.offset + off),
                                         length, piece, throttle, cut)
        except OSError:
            self.close_connection = True
            return 0

    def _send_pieces(self, read, length, piece, throttle, cut):
        step = piece or (1 << 20)
        off = 0
        limit = length if cut is None else cut
        while off < limit:
            n = min(step, limit - off)
            data = read(off, n)
            if not data:
                break
            self.connection.sendall(data)
            if piece:
                throttle.consume(len(data))
            off += len(data)
        if cut is not None:
            self._abort()
        return off


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, app, ssl_context=None):
        self.app = app
        self.ssl_context = ssl_context
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # TLS handshakes happen here, in the connection's own thread.
        if self.ssl_context is not None:
            try:
                request.settimeout(30)
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except OSError:  # ssl.SSLError is an OSError
                return
            try:
                super().finish_request(request, client_address)
            finally:
                try:
                    request.close()
                except OSError:
                    pass
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__module__ == "ssl":
            return
        if not self.app.quiet:
            super().handle_error(request, client_address)
