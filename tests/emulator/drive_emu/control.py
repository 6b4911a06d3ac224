"""control.py — the /_emu/* endpoints tests use to steer and inspect the
emulator: faults, stats, token and session expiry, refresh tokens, JWT
keys, and read-only views of every file and every stored content version.
No auth, no faults, not counted in stats."""

import json
import os

from .httpd_types import Response, json_response
from .util import fmt_time


def _err(status, msg):
    return json_response(status, {"error": msg})


class Control:
    def __init__(self, app):
        self.app = app

    def handle(self, req):
        app = self.app
        path = req.path.rstrip("/")
        m = req.method
        if path == "/_emu/faults":
            if m == "GET":
                return json_response(200, app.faults.get())
            if m == "POST":
                try:
                    cfg = json.loads(req.body.read_all(1 << 20) or b"{}")
                    app.faults.set(cfg)
                except ValueError as e:
                    return _err(400, str(e))
                return json_response(200, app.faults.get())
            if m == "DELETE":
                app.faults.set({})
                return json_response(200, {})
        elif path == "/_emu/stats" and m == "GET":
            return json_response(200, app.stats.snapshot(app.faults.injected))
        elif path == "/_emu/stats/reset" and m == "POST":
            app.stats.reset()
            app.faults.injected = 0
            return json_response(200, app.stats.snapshot(0))
        elif path == "/_emu/expire-tokens" and m == "POST":
            return json_response(200, {"expired": app.auth.expire_all()})
        elif path == "/_emu/expire-sessions" and m == "POST":
            return json_response(200, {"expired": app.sessions.expire_all()})
        elif path == "/_emu/refresh-tokens" and m == "POST":
            try:
                obj = json.loads(req.body.read_all(1 << 20) or b"{}")
                tokens = app.auth.edit_refresh_tokens(obj.get("add", []), obj.get("revoke", []))
            except (ValueError, AttributeError) as e:
                return _err(400, str(e))
            return json_response(200, {"refresh_tokens": tokens})
        elif path == "/_emu/jwt-keys" and m == "POST":
            try:
                n = app.auth.add_keys(req.body.read_all(1 << 20).decode("utf-8"))
            except (ValueError, IndexError, UnicodeDecodeError) as e:
                return _err(400, "no usable RSA key: %s" % e)
            return json_response(200, {"added": n})
        elif path in ("/_emu/health", "/_emu/info") and m == "GET":
            st = app.store
            return json_response(200, {"ok": True, "root_id": st.root_id, "drive_id": st.drive_id,
                                       "data_dir": st.dir, "pid": os.getpid(), "url": app.url})
        elif path == "/_emu/files" and m == "GET":
            return json_response(200, {"files": self._files()})
        elif path == "/_emu/versions" and m == "GET":
            return json_response(200, {"files": self._versions()})
        elif path.startswith("/_emu/versions/") and m == "GET":
            parts = path.split("/")
            if len(parts) != 5:
                return _err(404, "use /_emu/versions/ID/INDEX")
            return self._version_bytes(parts[3], parts[4])
        return _err(404, "no such control endpoint: %s %s" % (m, req.path))

    def _files(self):
        st = self.app.store
        out = []
        with st.lock:
            for rec in st.files.values():
                if rec.get("role"):
                    continue
                d = st.file_json(rec)
                d["deleted"] = bool(rec.get("deleted"))
                out.append(d)
        return out

    def _versions(self):
        st = self.app.store
        out = []
        with st.lock:
            for rec in st.files.values():
                if rec.get("role"):
                    continue
                out.append({
                    "id": rec["id"], "name": rec["name"], "parents": list(rec["parents"]),
                    "mimeType": rec["mimeType"],
                    "trashed": st.is_trashed(rec), "deleted": bool(rec.get("deleted")),
                    "versions": [{"version": str(v["version"]), "md5": v["md5"],
                                  "size": str(v["size"]), "time": fmt_time(v["time"])}
                                 for v in rec["versions"]],
                })
        return out

    def _version_bytes(self, fid, index):
        st = self.app.store
        with st.lock:
            rec = st.files.get(fid)
            try:
                idx = int(index)
                if rec is None or not 0 <= idx < len(rec["versions"]):
                    raise ValueError
            except ValueError:
                return _err(404, "no version %s of %s" % (index, fid))
            path, size, _ = st.content(rec, idx)
        return Response(200, headers=[], file_path=path, offset=0, length=size,
                        content_type="application/octet-stream")
