"""util.py — small shared helpers: Drive-like ids, RFC 3339 times, the
DriveError exception and Drive's error JSON. Owns no state."""

import calendar
import re
import secrets
import time

FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."


def new_file_id():
    # Drive's ids are 33 characters of [A-Za-z0-9_-], file ids starting with "1".
    return "1" + secrets.token_urlsafe(24)


def now_ms():
    return int(time.time() * 1000)


def fmt_time(ms):
    """RFC 3339 with milliseconds and Z, as Drive prints times."""
    sec, milli = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%03dZ" % milli


_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?)?"
    r"([Zz]|[+-]\d{2}:?\d{2})?$")


def parse_time(s):
    """Parse an RFC 3339 time (zone optional: UTC, as Drive's q assumes) to ms."""
    m = _TIME_RE.match(s.strip()) if isinstance(s, str) else None
    if not m:
        raise ValueError("bad time %r" % (s,))
    y, mo, d, h, mi, se, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h or 0), int(mi or 0),
                            int(se or 0), 0, 0, 0))
    ms = secs * 1000 + (int((frac[1:] + "000")[:3]) if frac else 0)
    if tz and tz not in ("Z", "z"):
        sign = -1 if tz[0] == "+" else 1
        digits = tz[1:].replace(":", "")
        ms += sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60) * 1000
    return ms


# reason -> (domain, default message), as Drive words them.
_REASONS = {
    "badRequest": ("global", "Bad Request"),
    "invalid": ("global", "Invalid Value"),
    "invalidParameter": ("global", "Invalid Value"),
    "parseError": ("global", "Parse Error"),
    "required": ("global", "Required"),
    "authError": ("global", "Invalid Credentials"),
    "notFound": ("global", "Not Found"),
    "forbidden": ("global", "Forbidden"),
    "fieldNotWritable": ("global", "The resource body includes fields which are not directly writable."),
    "fileIdInUse": ("global", "A file already exists with the provided ID."),
    "cannotAddParent": ("global", "Increasing the number of parents is not allowed."),
    "insufficientFilePermissions": ("global", "The user does not have sufficient permissions for this file."),
    "fileNotDownloadable": ("global", "Only files with binary content can be downloaded. Use Export with Docs Editors files."),
    "storageQuotaExceeded": ("global", "The user's Drive storage quota has been exceeded."),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "dailyLimitExceeded": ("usageLimits", "Daily Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Quota Exceeded"),
    "downloadQuotaExceeded": ("global", "The download quota for this file has been exceeded."),
    "backendError": ("global", "Backend Error"),
    "internalError": ("global", "Internal Error"),
    "requestedRangeNotSatisfiable": ("global", "Request range not satisfiable"),
}

_STATUS_REASON = {400: "badRequest", 401: "authError", 403: "userRateLimitExceeded",
                  404: "notFound", 409: "conflict", 416: "requestedRangeNotSatisfiable",
                  429: "rateLimitExceeded"}


def default_reason(status):
    return _STATUS_REASON.get(int(status), "backendError")


class DriveError(Exception):
    """An error answered in Drive's JSON shape."""

    def __init__(self, status, reason=None, message=None, location=None,
                 location_type=None, headers=None):
        self.status = int(status)
        self.reason = reason or default_reason(status)
        domain, default_msg = _REASONS.get(self.reason, ("global", self.reason))
        self.domain = domain
        self.message = message or default_msg
        self.location = location
        self.location_type = location_type
        self.headers = headers or []
        super().__init__("%d %s: %s" % (self.status, self.reason, self.message))

    def body(self):
        item = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            item["location"] = self.location
            item["locationType"] = self.location_type or "parameter"
        return {"error": {"code": self.status, "message": self.message, "errors": [item]}}


def not_found(file_id):
    return DriveError(404, "notFound", "File not found: %s." % file_id, "fileId", "parameter")


def invalid_param(name, message=None):
    return DriveError(400, "invalid", message or "Invalid Value", name, "parameter")


class AbortConnection(Exception):
    """The connection must be dropped without a response: the client went
    away mid-body, or a reset fault fired."""
