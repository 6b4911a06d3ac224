"""faults.py — fault injection and accounting: the fault configuration
(set at start from options, replaced at run time by POST /_emu/faults), the
per-request decision (fail with a status, reset the connection part-way,
add latency), the shared bandwidth throttles, and request statistics.
Faults never apply to /_emu/* (httpd.py does not ask for them there)."""

import random
import threading
import time

from .util import DriveError, default_reason

KINDS = ["token", "about", "list", "get", "download", "create", "upload_media",
         "upload_multipart", "upload_start", "upload_chunk", "upload_status", "update",
         "update_media", "delete", "generate_ids", "copy", "changes_start",
         "changes_list", "other"]

# With no fail_kinds, faults hit every Drive call but not the token
# endpoint: on Google that is another service (oauth2.googleapis.com), and
# a test of Drive retries should not lose its token. List "token" to fail it.
DEFAULT_FAULT_KINDS = [k for k in KINDS if k != "token"]

# Drive's own words for the errors a client must retry.
_MESSAGES = {
    ("userRateLimitExceeded", 403): "User Rate Limit Exceeded",
    ("rateLimitExceeded", 403): "Rate Limit Exceeded",
    ("rateLimitExceeded", 429): "Rate Limit Exceeded",
    ("backendError", 500): "Backend Error",
    ("backendError", 502): "Bad Gateway",
    ("backendError", 503): "Service Unavailable",
    ("backendError", 504): "Gateway Timeout",
}

_KEYS = {"fail_rate": float, "fail_status": int, "fail_reason": str, "fail_message": str,
         "fail_kinds": list, "fail_nth": list, "reset_rate": float, "reset_nth": list,
         "latency_ms": (int, float), "bandwidth": (int, float), "name_query_delay": (int, float),
         "mix_status": list, "short_pages": bool, "seed": int, "quota_bytes": int,
         "props_keep_modified": bool}


def make_error(status, reason=None, message=None):
    status = int(status)
    reason = reason or default_reason(status)
    if message is None:
        message = _MESSAGES.get((reason, status))
    return DriveError(status, reason, message)


def validate(cfg):
    if not isinstance(cfg, dict):
        raise ValueError("faults must be a JSON object")
    out = {}
    for k, v in cfg.items():
        if k not in _KEYS:
            raise ValueError("unknown fault key %r" % k)
        if v is None:
            continue
        t = _KEYS[k]
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, t) or (isinstance(v, bool) and t is not bool):
            raise ValueError("bad value for %r" % k)
        out[k] = v
    for k in ("fail_kinds",):
        for kind in out.get(k, []):
            if kind not in KINDS:
                raise ValueError("unknown request kind %r" % kind)
    for k in ("fail_nth", "reset_nth"):
        for item in out.get(k, []):
            if not isinstance(item, dict) or not isinstance(item.get("n"), int) or \
                    (item.get("kind") not in KINDS and item.get("kind") not in ("*", "any")):
                raise ValueError("bad %s entry %r" % (k, item))
    for pair in out.get("mix_status", []):
        if not (isinstance(pair, list) and len(pair) in (1, 2) and isinstance(pair[0], int)):
            raise ValueError("mix_status entries are [status, reason]")
    return out


class Throttle:
    """A byte-rate cap shared by every connection in one direction."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rate = 0
        self.next_free = 0.0

    def set_rate(self, rate):
        with self.lock:
            self.rate = float(rate or 0)
            self.next_free = time.monotonic()

    def piece(self):
        """How many bytes to move per step while throttled (0 = unthrottled)."""
        r = self.rate
        if r <= 0:
            return 0
        return int(max(1024, min(65536, r / 50)))

    def consume(self, n):
        with self.lock:
            if self.rate <= 0:
                return
            now = time.monotonic()
            start = max(now - 0.05, self.next_free)  # allow a 50 ms burst
            self.next_free = start + n / self.rate
            wait = self.next_free - now
        if wait > 0:
            time.sleep(wait)


class Decision:
    __slots__ = ("error", "reset", "latency")

    def __init__(self):
        self.error = None      # DriveError to answer instead of serving
        self.reset = None      # ("request" | "response", fraction 0..1 or {"bytes": n})
        self.latency = 0.0


class Faults:
    def __init__(self, initial=None):
        self.lock = threading.Lock()
        self.up = Throttle()
        self.down = Throttle()
        self.injected = 0
        self.set(initial or {})

    def set(self, cfg):
        cfg = validate(cfg)
        with self.lock:
            self.cfg = cfg
            self.rng = random.Random(cfg.get("seed"))
            self.counts = {}
            self.fired = set()
        self.up.set_rate(cfg.get("bandwidth", 0))
        self.down.set_rate(cfg.get("bandwidth", 0))

    def get(self):
        with self.lock:
            return dict(self.cfg)

    def value(self, key, default=None):
        return self.cfg.get(key, default)

    def short_pages_rng(self):
        return self.rng if self.cfg.get("short_pages") else None

    def decide(self, kind, has_body):
        d = Decision()
        with self.lock:
            cfg = self.cfg
            if not cfg:
                return d
            n = self.counts.get(kind, 0) + 1
            self.counts[kind] = n
            d.latency = cfg.get("latency_ms", 0) / 1000.0
            kinds = cfg.get("fail_kinds") or DEFAULT_FAULT_KINDS
            for i, item in enumerate(cfg.get("fail_nth", [])):
                if _nth_kind(item, kind) and ("f", i) not in self.fired and \
                        self._nth(item, kind, n):
                    self.fired.add(("f", i))
                    d.error = make_error(item.get("status", cfg.get("fail_status", 500)),
                                         item.get("reason"), item.get("message"))
                    break
            if d.error is None and kind in kinds and cfg.get("fail_rate", 0) > 0 and \
                    self.rng.random() < cfg["fail_rate"]:
                mix = cfg.get("mix_status")
                if mix:
                    pick = self.rng.choice(mix)
                    d.error = make_error(pick[0], pick[1] if len(pick) > 1 else None)
                else:
                    d.error = make_error(cfg.get("fail_status", 500), cfg.get("fail_reason"),
                                         cfg.get("fail_message"))
            if d.error is None:
                for i, item in enumerate(cfg.get("reset_nth", [])):
                    if _nth_kind(item, kind) and ("r", i) not in self.fired and \
                            self._nth(item, kind, n):
                        self.fired.add(("r", i))
                        side = item.get("side") or ("request" if has_body else "response")
                        if "bytes" in item:
                            d.reset = (side, {"bytes": int(item["bytes"])})
                        else:
                            d.reset = (side, float(item.get("fraction", 0.5)))
                        break
            if d.error is None and d.reset is None and kind in kinds and \
                    cfg.get("reset_rate", 0) > 0 and self.rng.random() < cfg["reset_rate"]:
                side = "request" if has_body and self.rng.random() < 0.5 else "response"
                d.reset = (side, self.rng.random())
            if d.error is not None or d.reset is not None:
                self.injected += 1
        return d

    def _nth(self, item, kind, n):
        if item["kind"] in ("*", "any"):
            total = sum(v for k, v in self.counts.items() if k != "token")
            return total == item["n"]
        return n == item["n"]


def _nth_kind(item, kind):
    if item["kind"] in ("*", "any"):
        return kind != "token"
    return item["kind"] == kind


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self._zero()

    def _zero(self):
        self.requests = {}
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def reset(self):
        with self.lock:
            self._zero()

    def count(self, kind):
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            self.total += 1

    def add_bytes(self, n_in, n_out):
        with self.lock:
            self.bytes_in += n_in
            self.bytes_out += n_out

    def snapshot(self, faults_injected):
        with self.lock:
            return {"requests": dict(self.requests), "total": self.total,
                    "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                    "faults_injected": faults_injected}
