"""uploads.py — getting request bodies onto disk fast and correctly.

Hasher computes md5 in a helper thread that reads back what was just written
(from the page cache), so hashing overlaps receiving — md5 runs at ~700 MB/s
on one core and would otherwise halve upload speed. receive_to_file streams
a body to a file with a reusable buffer; parse_multipart finds the parts of
a multipart/related body spooled to disk; Sessions keeps resumable upload
sessions (metadata JSON + a .part file) under data_dir/sessions so they
survive a restart. Drive semantics of the upload calls live in api.py."""

import hashlib
import json
import os
import secrets
import threading

from .util import DriveError, now_ms

CHUNK_ALIGN = 256 * 1024
BUF_SIZE = 1 << 20
_tls = threading.local()


def _buffer():
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = memoryview(bytearray(BUF_SIZE))
    return buf


class Hasher:
    """md5 of a file that is being appended to. advance(n) says the first n
    bytes are written; truncate(n) says the file was cut back (the hash then
    restarts from the file itself); hexdigest(n) waits for / computes the md5
    of the first n bytes. Only one party hashes at a time (self.busy)."""

    THREAD_MIN = 8 << 20   # lag worth a helper thread; small bodies hash inline

    def __init__(self, path):
        self.path = path
        self.cv = threading.Condition()
        self.md5 = hashlib.md5()
        self.pos = 0
        self.limit = 0
        self.gen = 0
        self.busy = False

    def advance(self, upto):
        with self.cv:
            if upto > self.limit:
                self.limit = upto
            if not self.busy and self.limit - self.pos >= self.THREAD_MIN:
                self.busy = True
                threading.Thread(target=self._run, name="md5", daemon=True).start()
            self.cv.notify_all()

    def truncate(self, to):
        with self.cv:
            self.limit = to
            if self.pos > to:
                self.gen += 1
                self.md5 = hashlib.md5()
                self.pos = 0
            self.cv.notify_all()

    def _step(self, fd, buf):
        """Hash the next piece; False when caught up. Caller is the busy party."""
        with self.cv:
            pos, limit, gen, md5 = self.pos, self.limit, self.gen, self.md5
        if pos >= limit:
            return False
        n = os.preadv(fd, [buf[:min(len(buf), limit - pos)]], pos)
        if n <= 0:
            raise DriveError(500, "backendError", "content shorter than expected")
        md5.update(buf[:n])
        with self.cv:
            if self.gen == gen:
                self.pos = pos + n
            self.cv.notify_all()
        return True

    def _run(self):
        buf = memoryview(bytearray(4 << 20))
        fd = None
        try:
            fd = os.open(self.path, os.O_RDONLY)
            idle_since = None
            while True:
                if self._step(fd, buf):
                    idle_since = None
                    continue
                with self.cv:
                    if self.pos < self.limit:
                        continue
                    if idle_since is None:
                        idle_since = now_ms()
                    elif now_ms() - idle_since > 200:
                        return
                    self.cv.wait(0.05)
        except (OSError, DriveError):
            pass
        finally:
            if fd is not None:
                os.close(fd)
            with self.cv:
                self.busy = False
                self.cv.notify_all()

    def hexdigest(self, upto):
        with self.cv:
            self.limit = upto
            if self.pos > upto:
                self.gen += 1
                self.md5 = hashlib.md5()
                self.pos = 0
            while self.busy and self.pos < upto:
                self.cv.wait(0.5)
            if self.pos >= upto:
                return self.md5.hexdigest()
            self.busy = True
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                buf = _buffer()
                while self._step(fd, buf):
                    pass
            finally:
                os.close(fd)
            with self.cv:
                return self.md5.hexdigest()
        finally:
            with self.cv:
                self.busy = False
                self.cv.notify_all()


def receive_to_file(body, fd, offset, hasher=None, limit=None):
    """Copy the request body into fd starting at offset; returns the byte
    count. Exceptions (client gone, injected reset) propagate with whatever
    was written left in place — the caller decides what to keep."""
    buf = _buffer()
    pos = offset
    while limit is None or pos - offset < limit:
        want = len(buf) if limit is None else min(len(buf), limit - (pos - offset))
        n = body.readinto(buf[:want])
        if not n:
            break
        view = buf[:n]
        while view:
            w = os.pwrite(fd, view, pos)
            pos += w
            view = view[w:]
        if hasher is not None:
            hasher.advance(pos)
    return pos - offset


def skip_body(body, count):
    buf = _buffer()
    left = count
    while left > 0:
        n = body.readinto(buf[:min(len(buf), left)])
        if not n:
            break
        left -= n
    return count - left


def _bad_multipart(msg="Malformed multipart body."):
    return DriveError(400, "badRequest", msg)


def _boundary(content_type):
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == "boundary":
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            if v:
                return v.encode("latin-1")
    raise _bad_multipart("Missing multipart boundary.")


def _headers(block):
    out = {}
    for line in block.split(b"\n"):
        line = line.strip(b"\r")
        if b":" in line:
            k, _, v = line.partition(b":")
            out[k.strip().decode("latin-1").lower()] = v.strip().decode("latin-1")
    return out


def parse_multipart(path, size, content_type):
    """Parse a multipart/related body spooled at path. Returns
    (metadata dict, media start, media end, media content type, base64?)."""
    delim = b"--" + _boundary(content_type)
    with open(path, "rb") as f:
        head = f.read(min(size, (1 << 20) + 4096))
        i = head.find(delim)
        if i < 0:
            raise _bad_multipart()
        i = head.find(b"\n", i) + 1
        hdr_end = head.find(b"\r\n\r\n", i)
        sep = 4
        if hdr_end < 0:
            hdr_end, sep = head.find(b"\n\n", i), 2
        if i <= 0 or hdr_end < 0:
            raise _bad_multipart()
        j = head.find(b"\r\n" + delim, hdr_end)
        if j < 0:
            raise _bad_multipart("Metadata part too large or not terminated.")
        meta_bytes = head[hdr_end + sep:j].strip()
        try:
            meta = json.loads(meta_bytes.decode("utf-8")) if meta_bytes else {}
        except ValueError:
            raise DriveError(400, "parseError", "Parse Error")
        if not isinstance(meta, dict):
            raise DriveError(400, "parseError", "Parse Error")
        k = j + 2 + len(delim)
        if head[k:k + 2] == b"--":
            raise _bad_multipart("Multipart body has no media part.")
        k = head.find(b"\n", k) + 1
        h2 = head.find(b"\r\n\r\n", k)
        sep = 4
        if h2 < 0:
            h2, sep = head.find(b"\n\n", k), 2
        if k <= 0 or h2 < 0:
            raise _bad_multipart()
        hdrs = _headers(head[k:h2])
        start = h2 + sep
        tail_len = min(size - start, 65536 + len(delim))
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        e = tail.rfind(b"\r\n" + delim + b"--")
        if e < 0:
            e = tail.rfind(b"\r\n" + delim)
        if e < 0:
            raise _bad_multipart("Multipart body not terminated.")
        end = size - tail_len + e
        if end < start:
            raise _bad_multipart()
    b64 = hdrs.get("content-transfer-encoding", "").lower() == "base64"
    return meta, start, end, hdrs.get("content-type", ""), b64


class Session:
    """One resumable upload session. info (persisted) holds: op ('create'
    or 'update'), file_id, meta, params (query of the start request),
    content_type, total (None while unknown), created, done (None or
    {"file_id", "status"})."""

    def __init__(self, sid, info, directory):
        self.id = sid
        self.info = info
        self.json_path = os.path.join(directory, sid + ".json")
        self.part_path = os.path.join(directory, sid + ".part")
        self.lock = threading.Lock()
        self.offset = 0
        self.hasher = Hasher(self.part_path)

    def save(self):
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.info, f)
        os.replace(tmp, self.json_path)


class Sessions:
    def __init__(self, data_dir):
        self.dir = os.path.join(data_dir, "sessions")
        os.makedirs(self.dir, exist_ok=True)
        self.lock = threading.Lock()
        self.sessions = {}
        for name in os.listdir(self.dir):
            if not name.endswith(".json"):
                continue
            sid = name[:-5]
            try:
                with open(os.path.join(self.dir, name)) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            s = Session(sid, info, self.dir)
            if os.path.exists(s.part_path):
                # A chunk cut short by a crash: keep whole 256 KiB units only,
                # as after a reset.
                size = os.path.getsize(s.part_path)
                keep = size if info.get("total") == size else size - size % CHUNK_ALIGN
                os.truncate(s.part_path, keep)
                s.offset = keep
            self.sessions[sid] = s

    def create(self, info):
        sid = "ABd" + secrets.token_urlsafe(48)
        s = Session(sid, info, self.dir)
        open(s.part_path, "wb").close()
        s.save()
        with self.lock:
            self.sessions[sid] = s
        return s

    def get(self, sid):
        with self.lock:
            return self.sessions.get(sid)

    def remove(self, s):
        with self.lock:
            self.sessions.pop(s.id, None)
        for p in (s.json_path, s.part_path):
            try:
                os.unlink(p)
            except OSError:
                pass

    def expire_all(self):
        with self.lock:
            all_s = list(self.sessions.values())
        for s in all_s:
            self.remove(s)
        return len(all_s)
