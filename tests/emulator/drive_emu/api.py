"""api.py — the Drive v3 calls: routing a request to its kind and handler,
and each handler's Drive semantics (writable fields, parents, trash,
uploads of every type, ranged downloads, changes feed, about). State lives
in store.py; bodies are read through the Request's streaming body."""

import base64
import hashlib
import json
import os
import re
import time
import urllib.parse

from .fields import parse_fields, project
from .query import parse_query
from .store import EMPTY_MD5, USER, QUOTA_LIMIT, is_folder, has_content, parse_order_by
from .uploads import (CHUNK_ALIGN, Hasher, receive_to_file, skip_body, parse_multipart)
from .util import (FOLDER_MIME, GOOGLE_APPS_PREFIX, DriveError, AbortConnection, fmt_time,
                   parse_time, invalid_param, new_file_id, not_found)
from .httpd_types import Response, json_response, error_response

DEFAULT_FILE_MASK = {"kind": None, "id": None, "name": None, "mimeType": None}
DEFAULT_LIST_MASK = {"kind": None, "nextPageToken": None, "incompleteSearch": None,
                     "files": DEFAULT_FILE_MASK}
DEFAULT_CHANGES_MASK = {"kind": None, "nextPageToken": None, "newStartPageToken": None,
                        "changes": {"kind": None, "changeType": None, "time": None,
                                    "removed": None, "fileId": None, "file": DEFAULT_FILE_MASK}}

# Fields a client may never set, on any call.
READ_ONLY = {
    "size", "md5Checksum", "sha1Checksum", "sha256Checksum", "version", "quotaBytesUsed",
    "headRevisionId", "webViewLink", "webContentLink", "iconLink", "thumbnailLink",
    "hasThumbnail", "thumbnailVersion", "owners", "capabilities", "spaces",
    "explicitlyTrashed", "ownedByMe", "shared", "trashedTime", "trashingUser",
    "lastModifyingUser", "sharingUser", "modifiedByMe", "viewedByMe", "fullFileExtension",
    "fileExtension", "isAppAuthorized", "permissions", "permissionIds", "exportLinks",
    "driveId", "teamDriveId", "imageMediaMetadata", "videoMediaMetadata",
    "hasAugmentedPermissions", "linkShareMetadata", "resourceKey", "labelInfo",
    "modifiedByMeTime", "sharedWithMeTime",
}
# Writable on create only (update answers fieldNotWritable).
CREATE_ONLY = {"id", "parents", "createdTime"}

MAX_JSON = 8 << 20
UPLOAD_PATH = "/upload/drive/v3/files"


def _strip_params(ctype):
    return (ctype or "").split(";")[0].strip()


class DriveAPI:
    def __init__(self, store, sessions, auth, faults, log=lambda *a: None):
        self.store = store
        self.sessions = sessions
        self.auth = auth
        self.faults = faults
        self.log = log

    # ---- routing -------------------------------------------------------
    def route(self, method, path, query, headers):
        """(kind, handler, needs_auth) for a request, decided before its body
        is read (fault injection and stats need the kind first)."""
        if path in ("/token", "/oauth2/v4/token", "/o/oauth2/token", "/oauth2/v3/token"):
            return ("token", self.token, False) if method == "POST" else ("other", self.not_found, False)
        if path == UPLOAD_PATH or path.startswith(UPLOAD_PATH + "/"):
            rest = path[len(UPLOAD_PATH):]
            if "upload_id" in query:
                if method == "DELETE":
                    return "other", self.upload_cancel, False
                if method not in ("PUT", "POST", "PATCH"):
                    return "other", self.not_found, False
                has_bytes = _has_body(headers)
                return ("upload_chunk" if has_bytes else "upload_status"), self.upload_session, False
            ut = query.get("uploadType", "")
            if rest == "" and method == "POST":
                kind = {"media": "upload_media", "multipart": "upload_multipart",
                        "resumable": "upload_start"}.get(ut, "other")
                return kind, self.upload_create, True
            m = re.fullmatch(r"/([^/]+)", rest)
            if m and method in ("PATCH", "PUT"):
                kind = {"media": "update_media", "multipart": "update_media",
                        "resumable": "upload_start"}.get(ut, "other")
                return kind, lambda req: self.upload_update(req, m.group(1)), True
            return "other", self.not_found, True
        if not path.startswith("/drive/v3/"):
            return "other", self.not_found, False
        rest = path[len("/drive/v3/"):]
        if rest == "files":
            if method == "GET":
                return "list", self.list, True
            if method == "POST":
                return "create", self.create, True
        elif rest == "files/generateIds" and method == "GET":
            return "generate_ids", self.generate_ids, True
        elif rest == "files/trash" and method == "DELETE":
            return "other", self.empty_trash, True
        elif rest == "about" and method == "GET":
            return "about", self.about, True
        elif rest == "changes/startPageToken" and method == "GET":
            return "changes_start", self.changes_start, True
        elif rest == "changes" and method == "GET":
            return "changes_list", self.changes_list, True
        elif rest == "drives" and method == "GET":
            return "other", self.drives_list, True
        elif rest.startswith("drives/") and method == "GET":
            return "other", lambda req: self.drives_get(req, rest[7:]), True
        elif rest.startswith("files/"):
            parts = rest.split("/")
            fid = parts[1]
            if len(parts) == 2:
                if method == "GET":
                    kind = "download" if query.get("alt") == "media" else "get"
                    return kind, lambda req: self.get(req, fid), True
                if method == "PATCH":
                    return "update", lambda req: self.update(req, fid), True
                if method == "DELETE":
                    return "delete", lambda req: self.delete(req, fid), True
            if len(parts) == 3 and parts[2] == "copy" and method == "POST":
                return "copy", lambda req: self.copy(req, fid), True
            if len(parts) == 3 and parts[2] == "export" and method == "GET":
                return "other", lambda req: self.export(req, fid), True
            if len(parts) == 4 and parts[2] == "revisions" and method == "GET":
                kind = "download" if query.get("alt") == "media" else "other"
                return kind, lambda req: self.revision_get(req, fid, parts[3]), True
        return "other", self.not_found, True

    def not_found(self, req):
        return error_response(DriveError(404, "notFound", "Not Found"))

    # ---- helpers -------------------------------------------------------
    def _json_body(self, req):
        raw = req.body.read_all(MAX_JSON)
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DriveError(400, "parseError", "Parse Error")
        if not isinstance(obj, dict):
            raise DriveError(400, "parseError", "Parse Error")
        return obj

    def _mask(self, req):
        return parse_fields(req.query.get("fields"))

    def _file_response(self, rec, req, status=200, mask=None):
        if mask is None:
            mask = self._mask(req)
        with self.store.lock:
            full = self.store.file_json(rec)
        return json_response(status, project(full, mask if mask is not None else DEFAULT_FILE_MASK))

    def _parent(self, pid):
        rec = self.store.files.get(self.store.resolve(pid))
        if rec is None or rec.get("deleted"):
            raise not_found(pid)
        if not is_folder(rec):
            raise DriveError(400, "badRequest", "The specified parent is not a folder.")
        return rec

    def _check_writable(self, meta, op):
        for k in meta:
            if k in READ_ONLY or (op != "create" and k in CREATE_ONLY):
                raise DriveError(403, "fieldNotWritable",
                                 "The resource body includes fields which are not directly writable.")

    def _apply_meta(self, rec, meta, op):
        """Apply writable fields to rec (caller holds the lock). Returns
        (explicit modifiedTime given, something changed). With the
        `props_keep_modified` fault, a change of appProperties/properties
        alone does not count: a Drive that does not move modifiedTime
        for app-private data (unverified either way on Google)."""
        changed = False
        keep = self.faults.value("props_keep_modified", False)
        if meta.get("name") is not None:
            if not isinstance(meta["name"], str):
                raise invalid_param("name")
            changed |= rec["name"] != meta["name"]
            rec["name"] = meta["name"]
        if "mimeType" in meta and meta["mimeType"] is not None:
            mt = meta["mimeType"]
            if not isinstance(mt, str):
                raise invalid_param("mimeType")
            if op != "create" and (mt == FOLDER_MIME) != is_folder(rec):
                raise DriveError(403, "fieldNotWritable", "A file's type cannot change to or from folder.")
            changed |= rec["mimeType"] != mt
            rec["mimeType"] = mt
        for key in ("description", "originalFilename"):
            if key in meta:
                if meta[key] is not None and not isinstance(meta[key], str):
                    raise invalid_param(key)
                changed |= rec.get(key) != meta[key]
                rec[key] = meta[key]
        if "starred" in meta:
            rec["starred"] = bool(meta["starred"])
        for key in ("appProperties", "properties"):
            if key in meta and meta[key] is not None:
                if not isinstance(meta[key], dict):
                    raise invalid_param(key)
                props = dict(rec.get(key) or {})
                for k, v in meta[key].items():
                    if v is None:
                        props.pop(k, None)  # null deletes a key
                    else:
                        props[k] = v if isinstance(v, str) else json.dumps(v)
                changed |= props != rec.get(key) and not keep
                rec[key] = props
        explicit = False
        if meta.get("modifiedTime") is not None:
            try:
                rec["modified"] = parse_time(meta["modifiedTime"])
            except ValueError:
                raise invalid_param("modifiedTime", "Invalid value for: modifiedTime")
            explicit = True
        if op == "create" and meta.get("createdTime") is not None:
            try:
                rec["created"] = parse_time(meta["createdTime"])
            except ValueError:
                raise invalid_param("createdTime", "Invalid value for: createdTime")
        return explicit, changed

    def _prepare_create(self, meta, media_type=None, with_content=False):
        """Validate a create; returns (file id, parent id, mime type)."""
        self._check_writable(meta, "create")
        parents = meta.get("parents") or []
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise invalid_param("parents")
        if len(parents) > 1:
            raise DriveError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
        parent = self._parent(parents[0] if parents else "root")
        fid = meta.get("id")
        if fid is not None:
            if not isinstance(fid, str) or not fid:
                raise invalid_param("id")
            if self.store.id_in_use(fid):
                raise DriveError(409, "fileIdInUse", "A file already exists with the provided ID.",
                                 "file.id", "other")
            if fid not in self.store.generated:
                raise DriveError(400, "invalid", "The provided file ID is not usable.", "file.id", "other")
        mime = meta.get("mimeType") or _strip_params(media_type) or "application/octet-stream"
        if with_content and mime.startswith(GOOGLE_APPS_PREFIX):
            raise DriveError(400, "badRequest", "Media content cannot be uploaded for type %s." % mime)
        return fid, parent["id"], mime

    def _create(self, meta, fid, parent_id, mime, content, link=False):
        """Make the file (caller holds the lock). content: (path|None, md5, size)
        or None; the path is moved into the store, or hard-linked if link."""
        st = self.store
        if fid is not None and st.id_in_use(fid):
            raise DriveError(409, "fileIdInUse", "A file already exists with the provided ID.",
                             "file.id", "other")
        self._parent(parent_id)
        was_generated = fid in st.generated
        rec = st.new_file(fid or new_file_id(), meta.get("name") or "Untitled", mime, parent_id)
        try:
            self._apply_meta(rec, {k: v for k, v in meta.items() if k != "mimeType"}, "create")
        except DriveError:
            # Undo: the file never existed and a generated id stays usable.
            st.children[parent_id].discard(rec["id"])
            del st.files[rec["id"]]
            if was_generated:
                st.generated.add(fid)
                st._journal({"g": [fid]})
            raise
        if has_content(rec):
            path, md5, size = content or (None, EMPTY_MD5, 0)
            st.add_version(rec, path, md5, size, link=link)
        st.commit(rec)
        return rec

    def _check_quota(self, extra):
        quota = self.faults.value("quota_bytes")
        if quota is not None:
            with self.store.lock:
                used, _ = self.store.usage()
            if used + extra > quota:
                raise DriveError(403, "storageQuotaExceeded",
                                 "The user's Drive storage quota has been exceeded.")

    def _receive_content(self, req):
        """Stream the body to a temp file; (path, md5, size)."""
        path = self.store.tmp_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        hasher = Hasher(path)
        try:
            n = receive_to_file(req.body, fd, 0, hasher)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        try:
            md5 = hasher.hexdigest(n)
            self._check_quota(n)
        except BaseException:
            os.unlink(path)
            raise
        return path, md5, n

    def _receive_multipart(self, req):
        """(metadata, (path, md5, size), media content type) of a multipart body."""
        ctype = req.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/"):
            raise DriveError(400, "badRequest", "Multipart upload needs a multipart/related body.")
        spool = self.store.tmp_path("mp")
        fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            total = receive_to_file(req.body, fd, 0)
            meta, start, end, media_type, b64 = parse_multipart(spool, total, ctype)
            path = self.store.tmp_path()
            if b64:
                raw = os.pread(fd, end - start, start)
                try:
                    data = base64.b64decode(b"".join(raw.split()), validate=True)
                except ValueError:
                    raise DriveError(400, "badRequest", "Invalid base64 media.")
                with open(path, "wb") as f:
                    f.write(data)
                size, md5 = len(data), hashlib.md5(data).hexdigest()
            else:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    off, left = start, end - start
                    while left > 0:
                        n = os.copy_file_range(fd, out, left, off)
                        if n <= 0:
                            raise DriveError(500, "backendError", "copy failed")
                        off += n
                        left -= n
                finally:
                    os.close(out)
                size = end - start
                md5 = Hasher(path).hexdigest(size)
            try:
                self._check_quota(size)
            except DriveError:
                os.unlink(path)
                raise
            return meta, (path, md5, size), media_type
        finally:
            os.close(fd)
            os.unlink(spool)

    # ---- token ---------------------------------------------------------
    def token(self, req):
        raw = req.body.read_all(1 << 20).decode("utf-8", "replace")
        if req.headers.get("Content-Type", "").startswith("application/json"):
            try:
                form = {k: str(v) for k, v in json.loads(raw or "{}").items()}
            except (ValueError, AttributeError):
                form = {}
        else:
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
        status, obj = self.auth.token_grant(form)
        return json_response(status, obj, [("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"),
                                           ("Pragma", "no-cache")])

    # ---- files ---------------------------------------------------------
    def list(self, req):
        q = req.query.get("q")
        ast = parse_query(q)
        try:
            page_size = int(req.query.get("pageSize", "100"))
        except ValueError:
            raise invalid_param("pageSize")
        if not 1 <= page_size <= 1000:
            raise invalid_param("pageSize", "Invalid value '%d'. Values must be within the range: [1, 1000]" % page_size)
        order_text = req.query.get("orderBy", "")
        order = parse_order_by(order_text)
        mask = self._mask(req)
        sig = hashlib.md5(("%s\0%s" % (q, order_text)).encode()).hexdigest()[:12]
        recs, token = self.store.list_files(
            ast, order, req.query.get("pageToken") or None, page_size, sig,
            self.faults.value("name_query_delay", 0.0), self.faults.short_pages_rng())
        with self.store.lock:
            files = [self.store.file_json(r) for r in recs]
        out = {"kind": "drive#fileList", "incompleteSearch": False, "files": files}
        if token:
            out["nextPageToken"] = token
        return json_response(200, project(out, mask if mask is not None else DEFAULT_LIST_MASK))

    def get(self, req, fid):
        with self.store.lock:
            rec = self.store.get_live(fid)
        if req.query.get("alt") == "media":
            return self._download(req, rec)
        return self._file_response(rec, req)

    def revision_get(self, req, fid, rev):
        """revisions.get: with alt=media, that revision's bytes (Range
        works as for files.get); without, its metadata."""
        with self.store.lock:
            rec = self.store.get_live(fid)
            idx = [i for i, v in enumerate(rec["versions"]) if v.get("rev") == rev]
            if not idx:
                raise DriveError(404, "notFound", "Revision not found: %s." % rev,
                                 "revisionId", "parameter")
            v = rec["versions"][idx[0]]
        if req.query.get("alt") == "media":
            return self._download(req, rec, idx[0])
        return json_response(200, {"kind": "drive#revision", "id": rev,
                                   "md5Checksum": v["md5"], "size": str(v["size"])})

    def _download(self, req, rec, index=-1):
        if not has_content(rec):
            raise DriveError(403, "fileNotDownloadable",
                             "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                             "alt", "parameter")
        with self.store.lock:
            path, size, md5 = self.store.content(rec, index)
            mime = rec["mimeType"]
        headers = [("Accept-Ranges", "bytes"), ("Cache-Control", "private, max-age=0"),
                   ("Content-Disposition", "attachment")]
        rng = _parse_range(req.headers.get("Range"), size)
        if rng == "unsatisfiable":
            e = DriveError(416, "requestedRangeNotSatisfiable", "Request range not satisfiable",
                           headers=[("Content-Range", "bytes */%d" % size)])
            return error_response(e)
        if rng is None:
            headers.append(("X-Goog-Hash", "md5=" + base64.b64encode(bytes.fromhex(md5)).decode()))
            return Response(200, headers=headers, file_path=path, offset=0, length=size,
                            content_type=mime)
        start, end = rng
        headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        return Response(206, headers=headers, file_path=path, offset=start,
                        length=end - start + 1, content_type=mime)

    def export(self, req, fid):
        with self.store.lock:
            self.store.get_live(fid)  # 404 first, like Drive
        raise DriveError(403, "fileNotExportable", "Export only supports Docs Editors files.")

    def create(self, req):
        meta = self._json_body(req)
        with self.store.lock:
            fid, parent, mime = self._prepare_create(meta)
            rec = self._create(meta, fid, parent, mime, None)
        return self._file_response(rec, req)

    def upload_create(self, req):
        ut = req.query.get("uploadType", "")
        if ut == "media":
            content = self._receive_content(req)
            ctype = req.headers.get("Content-Type")
            with self.store.lock:
                try:
                    fid, parent, mime = self._prepare_create({}, ctype, True)
                    rec = self._create({}, fid, parent, mime, content)
                except BaseException:
                    _unlink(content[0])
                    raise
            return self._file_response(rec, req)
        if ut == "multipart":
            meta, content, media_type = self._receive_multipart(req)
            with self.store.lock:
                try:
                    fid, parent, mime = self._prepare_create(meta, media_type, True)
                    rec = self._create(meta, fid, parent, mime, content)
                except BaseException:
                    _unlink(content[0])
                    raise
            return self._file_response(rec, req)
        if ut == "resumable":
            meta = self._json_body(req)
            ctype = req.headers.get("X-Upload-Content-Type")
            with self.store.lock:
                self._prepare_create(meta, ctype, True)
            return self._start_session(req, "create", None, meta)
        raise DriveError(400, "badRequest", "Upload requests must include an uploadType URL parameter and a URL that begins with /upload/.")

    def upload_update(self, req, fid):
        ut = req.query.get("uploadType", "")
        if ut not in ("media", "multipart", "resumable"):
            raise DriveError(400, "badRequest", "Upload requests must include an uploadType URL parameter and a URL that begins with /upload/.")
        with self.store.lock:
            rec = self.store.get_live(fid)
            if not has_content(rec):
                raise DriveError(400, "badRequest", "Media content cannot be uploaded for type %s." % rec["mimeType"])
        if ut == "resumable":
            meta = self._json_body(req)
            self._check_writable(meta, "update")
            return self._start_session(req, "update", rec["id"], meta)
        if ut == "media":
            meta, content = {}, self._receive_content(req)
        else:
            meta, content, _ = self._receive_multipart(req)
        try:
            rec = self._update(req, fid, meta, content)
        except BaseException:
            _unlink(content[0])
            raise
        return self._file_response(rec, req)

    def update(self, req, fid):
        meta = self._json_body(req)
        rec = self._update(req, fid, meta, None)
        return self._file_response(rec, req)

    def _update(self, req, fid, meta, content):
        """PATCH semantics, with optional new content (path, md5, size)."""
        self._check_writable(meta, "update")
        add = [p for p in req.query.get("addParents", "").split(",") if p]
        remove = [p for p in req.query.get("removeParents", "").split(",") if p]
        st = self.store
        with st.lock:
            rec = st.get_live(fid)
            if rec.get("role"):
                raise DriveError(403, "insufficientFilePermissions",
                                 "The user does not have sufficient permissions for this file.")
            parents = None
            if add or remove:
                remove_ids = {st.resolve(p) for p in remove}
                cur = [p for p in rec["parents"] if p not in remove_ids]
                for p in add:
                    pid = st.resolve(p)
                    if pid not in cur:
                        cur.append(pid)
                if len(cur) > 1:
                    raise DriveError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
                if not cur:
                    raise DriveError(400, "badRequest", "A file must keep one parent.")
                new_parent = self._parent(cur[0])
                if new_parent["id"] == rec["id"] or rec in st.ancestors(new_parent):
                    raise DriveError(400, "badRequest", "The move would create a cycle.")
                parents = cur
            if content is not None and not has_content(rec):
                raise DriveError(400, "badRequest", "Media content cannot be uploaded for type %s." % rec["mimeType"])
            trash = meta.get("trashed")
            if trash is not None and not isinstance(trash, bool):
                raise invalid_param("trashed")
            backup = json.loads(json.dumps(rec))
            try:
                explicit, changed = self._apply_meta(rec, meta, "update")
            except DriveError:
                rec.clear()
                rec.update(backup)
                raise
            if parents is not None and parents != rec["parents"]:
                st.set_parent(rec, parents[0])
            if content is not None:
                path, md5, size = content
                st.add_version(rec, path, md5, size)
                changed = True
            if changed and not explicit:
                rec["modified"] = int(time.time() * 1000)
            cascade = []
            if trash is not None and trash != rec.get("explicitlyTrashed"):
                rec["explicitlyTrashed"] = trash
                rec["trashedTime"] = int(time.time() * 1000) if trash else None
                # Descendants' effective trashed state changed too: they go
                # through the changes feed like on Drive.
                cascade = st.descendants(rec) if is_folder(rec) else []
            st.commit(rec)
            for d in cascade:
                st.commit(d)
            return rec

    def delete(self, req, fid):
        st = self.store
        with st.lock:
            rec = st.get_live(fid)
            if rec.get("role"):
                raise DriveError(403, "insufficientFilePermissions",
                                 "The user does not have sufficient permissions for this file.")
            for d in reversed(st.descendants(rec)):
                st.mark_deleted(d)
            st.mark_deleted(rec)
        return Response(204)

    def empty_trash(self, req):
        st = self.store
        with st.lock:
            victims = [r for r in st.files.values()
                       if not r.get("deleted") and r.get("explicitlyTrashed")]
            for rec in victims:
                if rec.get("deleted"):
                    continue
                for d in reversed(st.descendants(rec)):
                    st.mark_deleted(d)
                st.mark_deleted(rec)
        return Response(204)

    def generate_ids(self, req):
        try:
            count = int(req.query.get("count", "10"))
        except ValueError:
            raise invalid_param("count")
        if not 1 <= count <= 1000:
            raise invalid_param("count", "Invalid value '%d'. Values must be within the range: [1, 1000]" % count)
        space = req.query.get("space", "drive")
        st = self.store
        with st.lock:
            ids = []
            while len(ids) < count:
                fid = new_file_id()
                if fid not in st.files and fid not in st.generated:
                    ids.append(fid)
            st.generated.update(ids)
            st._journal({"g": ids})
        out = {"kind": "drive#generatedIds", "space": space, "ids": ids}
        mask = self._mask(req)
        return json_response(200, project(out, mask) if mask is not None else out)

    def copy(self, req, fid):
        meta = self._json_body(req)
        st = self.store
        with st.lock:
            src = st.get_live(fid)
            if is_folder(src) or not has_content(src):
                raise DriveError(403, "cannotCopyFile", "This file cannot be copied by the user.")
            self._check_writable(meta, "create")
            m = dict(meta)
            m.setdefault("parents", list(src["parents"]))
            m.setdefault("name", "Copy of " + src["name"])
            for key in ("description", "appProperties", "properties"):
                if key not in m and src.get(key):
                    m[key] = src[key]
            newid, parent, mime = self._prepare_create(m, src["mimeType"], True)
            path, size, md5 = st.content(src)
            rec = self._create(m, newid, parent, mime, (path, md5, size), link=True)
        return self._file_response(rec, req)

    # ---- resumable uploads ---------------------------------------------
    def _start_session(self, req, op, fid, meta):
        total = req.headers.get("X-Upload-Content-Length")
        if total is not None:
            try:
                total = int(total)
                if total < 0:
                    raise ValueError
            except ValueError:
                raise invalid_param("X-Upload-Content-Length")
        params = {k: v for k, v in req.query.items() if k != "upload_id"}
        s = self.sessions.create({
            "op": op, "file_id": fid, "meta": meta, "params": params,
            "content_type": req.headers.get("X-Upload-Content-Type"),
            "total": total, "created": int(time.time() * 1000), "done": None,
            "path": req.path})
        params["upload_id"] = s.id
        loc = req.base_url + req.path + "?" + urllib.parse.urlencode(params)
        return Response(200, headers=[("Location", loc), ("X-GUploader-UploadID", s.id)],
                        content_type="text/plain; charset=utf-8")

    def upload_cancel(self, req):
        s = self.sessions.get(req.query.get("upload_id"))
        if s is None:
            raise DriveError(404, "notFound", "Upload session not found.")
        self.sessions.remove(s)
        return Response(499, reason="Client Closed Request")

    def _resume_incomplete(self, s):
        headers = [("X-GUploader-UploadID", s.id)]
        if s.offset > 0:
            headers.append(("Range", "bytes=0-%d" % (s.offset - 1)))
        return Response(308, reason="Resume Incomplete", headers=headers,
                        content_type="text/plain; charset=utf-8")

    def upload_session(self, req):
        s = self.sessions.get(req.query.get("upload_id"))
        if s is None:
            raise DriveError(404, "notFound", "Upload session not found or expired.")
        with s.lock:
            return self._session_request(req, s)

    def _session_request(self, req, s):
        info = s.info
        mask = self._mask(req)
        if mask is None:
            mask = parse_fields(info["params"].get("fields"))
        if info.get("done"):
            # The upload finished (perhaps its response was lost): answer
            # with the file, as Drive does for a completed session.
            req.body.drain()
            with self.store.lock:
                rec = self.store.get_live(info["done"]["file_id"])
            return self._file_response(rec, req, info["done"]["status"], mask)
        cr = req.headers.get("Content-Range")
        length = req.body.length
        if cr is None:
            if not req.body.has_body:
                first = last = total = None
                if info["total"] is not None and s.offset == info["total"]:
                    return self._finalize(req, s, mask)
                return self._resume_incomplete(s)
            first, last, total = 0, None, length  # single request carrying everything
        else:
            m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", cr)
            if not m:
                req.body.drain()
                raise DriveError(400, "badRequest", "Invalid Content-Range header: %s" % cr)
            first = int(m.group(1)) if m.group(1) is not None else None
            last = int(m.group(2)) if m.group(2) is not None else None
            total = None if m.group(3) == "*" else int(m.group(3))
        if total is not None and info["total"] is not None and total != info["total"]:
            req.body.drain()
            raise DriveError(400, "badRequest", "The total size %d does not match the size %d given before." % (total, info["total"]))
        if first is None:
            # Status query: "bytes */TOTAL" (may also finish an upload whose
            # length was unknown while it was sent).
            if req.body.drain() != 0:
                raise DriveError(400, "badRequest", "A status query must have an empty body.")
            if total is not None:
                if s.offset > total:
                    raise DriveError(400, "badRequest", "More bytes were received than the total given.")
                info["total"] = total
                s.save()
                if s.offset == total:
                    return self._finalize(req, s, mask)
            return self._resume_incomplete(s)
        if last is None:
            last = first + (length - 1 if length is not None else -1)
        size = last - first + 1
        if last < first and length not in (0, None):
            req.body.drain()
            raise DriveError(400, "badRequest", "Invalid Content-Range header: %s" % cr)
        if length is not None and cr is not None and length != size:
            req.body.drain()
            raise DriveError(400, "badRequest", "Content-Length %d does not match Content-Range %s." % (length, cr))
        final = total is not None and last + 1 == total
        if total is not None and last + 1 > total:
            req.body.drain()
            raise DriveError(400, "badRequest", "Content-Range goes past the total size.")
        if not final and cr is not None and size % CHUNK_ALIGN:
            req.body.drain()
            raise DriveError(400, "badRequest",
                             "Invalid request.  The number of bytes uploaded is required to be equal or "
                             "greater than 262144, except for the final request (it's recommended to be "
                             "the exact multiple of 262144).  The received request contained %d bytes, "
                             "which does not meet this requirement." % size)
        if cr is not None and (first > s.offset or last + 1 < s.offset):
            # A gap, or bytes we already have: say where we are instead of
            # storing anything out of place.
            req.body.drain()
            return self._resume_incomplete(s)
        if cr is None:
            # No Content-Range: the body is the whole file, from byte 0.
            self._cut_session(s, 0)
            self._receive_chunk(req, s, 0)
            if info["total"] is not None and s.offset != info["total"]:
                self._cut_session(s, 0)
                raise DriveError(400, "badRequest", "Received %d bytes, expected %d." % (s.offset, info["total"]))
            info["total"] = s.offset
            s.save()
            return self._finalize(req, s, mask)
        # Overlap with what we already have (a chunk re-sent after a reset
        # that kept part of it): skip the known bytes, store the rest.
        before = s.offset
        skip = before - first
        got = self._receive_chunk(req, s, skip)
        if got != size - skip:
            self._cut_session(s, before)
            raise DriveError(400, "badRequest", "The body was shorter than its Content-Range.")
        if total is not None and info["total"] != total:
            info["total"] = total
            s.save()
        if final:
            return self._finalize(req, s, mask)
        return self._resume_incomplete(s)

    def _cut_session(self, s, keep):
        keep = max(0, min(keep, s.offset))
        os.truncate(s.part_path, keep)
        s.offset = keep
        s.hasher.truncate(keep)

    def _receive_chunk(self, req, s, skip):
        """Append the chunk (minus `skip` already-held bytes) to the part file.
        On a broken connection keep only whole 256 KiB units of what
        arrived, as Drive persists uploads in such units."""
        start = s.offset
        first = start - skip
        if skip:
            if skip_body(req.body, skip) != skip:
                return 0
        fd = os.open(s.part_path, os.O_WRONLY)
        got = 0
        try:
            os.ftruncate(fd, start)
            try:
                got = receive_to_file(req.body, fd, start, s.hasher)
            except AbortConnection:
                arrived = os.fstat(fd).st_size - first
                keep = max(start, first + (arrived // CHUNK_ALIGN) * CHUNK_ALIGN)
                os.ftruncate(fd, keep)
                s.offset = keep
                s.hasher.truncate(keep)
                raise
        finally:
            os.close(fd)
        s.offset = start + got
        return got

    def _finalize(self, req, s, mask):
        info = s.info
        size = s.offset
        md5 = s.hasher.hexdigest(size)
        self._check_quota(size)
        meta = info["meta"]
        st = self.store
        if info["op"] == "create":
            with st.lock:
                fid, parent, mime = self._prepare_create(meta, info.get("content_type"), True)
                rec = self._create(meta, fid, parent, mime, (s.part_path, md5, size))
            status = 201
        else:
            req_params = _FakeReq(info["params"])
            rec = self._update(req_params, info["file_id"], meta, (s.part_path, md5, size))
            status = 200
        info["done"] = {"file_id": rec["id"], "status": status}
        s.save()
        return self._file_response(rec, req, status, mask)

    # ---- about, changes, drives -----------------------------------------
    def about(self, req):
        mask = self._mask(req)
        if mask is None:
            raise DriveError(400, "required", "The 'fields' parameter is required for this method.",
                             "fields", "parameter")
        with self.store.lock:
            used, trash = self.store.usage()
        quota = self.faults.value("quota_bytes") or QUOTA_LIMIT
        out = {
            "kind": "drive#about",
            "user": USER,
            "storageQuota": {"limit": str(quota), "usage": str(used),
                             "usageInDrive": str(used), "usageInDriveTrash": str(trash)},
            "maxUploadSize": str(5 * 1024 ** 4),
            "appInstalled": False,
            "canCreateDrives": True,
            "canCreateTeamDrives": True,
            "folderColorPalette": ["#ac725e", "#4986e7"],
            "importFormats": {},
            "exportFormats": {},
            "maxImportSizes": {},
            "driveThemes": [],
        }
        return json_response(200, project(out, mask))

    def changes_start(self, req):
        with self.store.lock:
            token = str(self.store.change_counter + 1)
        out = {"kind": "drive#startPageToken", "startPageToken": token}
        mask = self._mask(req)
        return json_response(200, project(out, mask) if mask is not None else out)

    def changes_list(self, req):
        token = req.query.get("pageToken")
        if not token:
            raise DriveError(400, "required", "Required parameter: pageToken", "pageToken", "parameter")
        try:
            start = int(token)
            if start < 1:
                raise ValueError
        except ValueError:
            raise invalid_param("pageToken")
        try:
            page_size = int(req.query.get("pageSize", "100"))
        except ValueError:
            raise invalid_param("pageSize")
        if not 1 <= page_size <= 1000:
            raise invalid_param("pageSize", "Invalid value '%d'. Values must be within the range: [1, 1000]" % page_size)
        include_removed = req.query.get("includeRemoved", "true").lower() != "false"
        mask = self._mask(req)
        entries, nxt, new_start = self.store.changes_page(start, page_size, include_removed)
        changes = []
        with self.store.lock:
            for cid, fid, ms, removed in entries:
                c = {"kind": "drive#change", "changeType": "file", "type": "file",
                     "time": fmt_time(ms), "removed": removed, "fileId": fid}
                if not removed:
                    rec = self.store.files[fid]
                    c["file"] = self.store.file_json(rec)
                    drive = self.store.drive_of(rec)
                    if drive:
                        c["driveId"] = drive
                changes.append(c)
        out = {"kind": "drive#changeList", "changes": changes}
        if nxt:
            out["nextPageToken"] = nxt
        else:
            out["newStartPageToken"] = new_start
        return json_response(200, project(out, mask if mask is not None else DEFAULT_CHANGES_MASK))

    def _drive_json(self):
        st = self.store
        return {"kind": "drive#drive", "id": st.drive_id, "name": "Emulated Shared Drive",
                "createdTime": fmt_time(st.drive_created), "hidden": False,
                "capabilities": {"canAddChildren": True, "canEdit": True, "canListChildren": True}}

    def drives_list(self, req):
        out = {"kind": "drive#driveList", "drives": [self._drive_json()]}
        mask = self._mask(req)
        return json_response(200, project(out, mask) if mask is not None else out)

    def drives_get(self, req, did):
        if did != self.store.drive_id:
            raise DriveError(404, "notFound", "Shared drive not found: %s" % did, "driveId", "parameter")
        mask = self._mask(req)
        out = self._drive_json()
        return json_response(200, project(out, mask) if mask is not None else out)


class _FakeReq:
    """Carries the start request's query into _update at finalize time."""

    def __init__(self, query):
        self.query = query


def _unlink(path):
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def _has_body(headers):
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return True
    try:
        return int(headers.get("Content-Length", "0") or "0") > 0
    except ValueError:
        return False


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _parse_range(header, size):
    """(start, end) inclusive, None to serve everything, or 'unsatisfiable'."""
    if not header:
        return None
    m = _RANGE.fullmatch(header)
    if not m:
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(a)
    end = int(b) if b else size - 1
    if b and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)
