"""store.py — everything the emulator remembers: file metadata (in memory,
persisted as an append-only JSON-lines journal replayed and compacted at
start), content versions (immutable blobs on disk, every version kept), the
changes feed, generated ids, and the two folder roots (My Drive and one fake
shared drive). Drive semantics (what is writable, error choices) live in
api.py; this module only keeps state consistent. All access goes through
Store.lock (an RLock); content I/O happens outside it on immutable blobs."""

import base64
import functools
import hashlib
import json
import os
import secrets
import threading
from bisect import bisect_left
from collections import defaultdict

from .query import evaluate, candidate_parents, has_name_clause
from .util import (FOLDER_MIME, GOOGLE_APPS_PREFIX, DriveError, fmt_time, now_ms,
                   invalid_param)

EMPTY_MD5 = hashlib.md5(b"").hexdigest()
USER = {
    "kind": "drive#user",
    "displayName": "Emulated User",
    "emailAddress": "emulator@vectur.test",
    "me": True,
    "permissionId": "00000000000000000001",
    "photoLink": "https://lh3.googleusercontent.com/a/default-user",
}
QUOTA_LIMIT = 15 * 1024 ** 4


def is_folder(rec):
    return rec["mimeType"] == FOLDER_MIME


def has_content(rec):
    return not rec["mimeType"].startswith(GOOGLE_APPS_PREFIX)


class _View:
    """What query.evaluate needs to see of a file."""
    __slots__ = ("rec", "store")

    def __init__(self, store, rec):
        self.store = store
        self.rec = rec

    name = property(lambda s: s.rec["name"])
    mimeType = property(lambda s: s.rec["mimeType"])
    starred = property(lambda s: s.rec.get("starred", False))
    modified_ms = property(lambda s: s.rec["modified"])
    created_ms = property(lambda s: s.rec["created"])
    parents = property(lambda s: s.rec["parents"])
    trashed = property(lambda s: s.store.is_trashed(s.rec))
    owned = property(lambda s: s.store.drive_of(s.rec) is None)
    root_id = property(lambda s: s.store.root_id)
    user_email = USER["emailAddress"]

    def props(self, field):
        return self.rec.get(field) or {}


# orderBy keys -> how to read them from a record.
_ORDER_KEYS = {
    "name": lambda r: r["name"].casefold(),
    "name_natural": lambda r: r["name"].casefold(),
    "createdTime": lambda r: r["created"],
    "modifiedTime": lambda r: r["modified"],
    "modifiedByMeTime": lambda r: r["modified"],
    "viewedByMeTime": lambda r: r["modified"],
    "recency": lambda r: r["modified"],
    "sharedWithMeTime": lambda r: r["created"],
    "folder": lambda r: 0 if is_folder(r) else 1,
    "quotaBytesUsed": lambda r: r["versions"][-1]["size"] if r["versions"] else 0,
    "starred": lambda r: 0 if r.get("starred") else 1,
}


def parse_order_by(text):
    """'folder,name desc' -> [(key, desc)]; 400 on unknown keys."""
    out = []
    if not text:
        return out
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0] not in _ORDER_KEYS or (
                len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise invalid_param("orderBy", "Invalid Value")
        out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return out


class Store:
    def __init__(self, data_dir, log=lambda *a: None):
        self.dir = data_dir
        self.blob_dir = os.path.join(data_dir, "blobs")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        for d in (self.blob_dir, self.tmp_dir):
            os.makedirs(d, exist_ok=True)
        self.log = log
        self.lock = threading.RLock()
        self.files = {}                      # id -> record (deleted ones too)
        self.children = defaultdict(set)     # parent id -> live child ids
        self.generated = set()               # ids handed out by generateIds, unused
        self.version_counter = 0
        self.change_counter = 0
        self.seq = 0
        self.changes = []                    # [cid, file id, ms, removed], cid ascending
        self.change_ids = []                 # cids, for bisect
        self.latest_change = {}              # file id -> its newest cid
        self.root_id = None
        self.drive_id = None
        self.drive_created = None
        self.journal_path = os.path.join(data_dir, "journal.jsonl")
        self._load()
        self._compact()
        self.jf = open(self.journal_path, "a", encoding="utf-8")
        # Leftovers of uploads interrupted by a crash are useless now.
        for name in os.listdir(self.tmp_dir):
            try:
                os.unlink(os.path.join(self.tmp_dir, name))
            except OSError:
                pass

    # ---- persistence -------------------------------------------------
    def _load(self):
        if os.path.exists(self.journal_path):
            with open(self.journal_path, "r", encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line after a kill
                    self._replay(rec)
        if self.root_id is None:
            self.root_id = "0A" + secrets.token_urlsafe(13)[:17]
            self.drive_id = "0A" + secrets.token_urlsafe(13)[:17]
            self.drive_created = now_ms()
        for fid, rec in self.files.items():
            self.version_counter = max(self.version_counter, rec["version"])
            self.seq = max(self.seq, rec["seq"])
            if not rec.get("deleted"):
                for p in rec["parents"]:
                    self.children[p].add(fid)
        for root_id, name, role in ((self.root_id, "My Drive", "root"),
                                    (self.drive_id, "Emulated Shared Drive", "drive")):
            if root_id not in self.files:
                self.files[root_id] = self._new_rec(root_id, name, FOLDER_MIME, [],
                                                    self.drive_created or now_ms())
                self.files[root_id]["role"] = role

    def _replay(self, rec):
        if "f" in rec:
            self.files[rec["f"]["id"]] = rec["f"]
        elif "c" in rec:
            cid, fid, ms, removed = rec["c"]
            self._append_change(cid, fid, ms, removed)
        elif "g" in rec:
            self.generated.update(rec["g"])
        elif "gu" in rec:
            self.generated.difference_update(rec["gu"])
        elif "m" in rec:
            m = rec["m"]
            self.root_id, self.drive_id, self.drive_created = m["root"], m["drive"], m["drive_created"]

    def _append_change(self, cid, fid, ms, removed):
        self.changes.append([cid, fid, ms, removed])
        self.change_ids.append(cid)
        self.latest_change[fid] = cid
        self.change_counter = max(self.change_counter, cid)

    def _compact(self):
        """Rewrite the journal as a snapshot; superseded changes are dropped
        (Drive's feed only ever shows a file's latest change anyway)."""
        self.journal_lines = 0
        live = [c for c in self.changes if self.latest_change.get(c[1]) == c[0]]
        self.changes = live
        self.change_ids = [c[0] for c in live]
        tmp = self.journal_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"m": {"root": self.root_id, "drive": self.drive_id,
                                      "drive_created": self.drive_created}}) + "\n")
            if self.generated:
                f.write(json.dumps({"g": sorted(self.generated)}) + "\n")
            for rec in self.files.values():
                f.write(json.dumps({"f": rec}) + "\n")
            for c in live:
                f.write(json.dumps({"c": c}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.journal_path)

    COMPACT_EVERY = 200000  # journal lines between snapshots (long soak runs)

    def _journal(self, obj):
        self.jf.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.jf.flush()
        self.journal_lines += 1
        if self.journal_lines >= self.COMPACT_EVERY:
            self.jf.close()
            self._compact()
            self.jf = open(self.journal_path, "a", encoding="utf-8")

    def close(self):
        with self.lock:
            try:
                self.jf.flush()
                os.fsync(self.jf.fileno())
                self.jf.close()
            except (OSError, ValueError):
                pass

    # ---- records -----------------------------------------------------
    def _new_rec(self, fid, name, mime, parents, ms):
        self.seq += 1
        return {"id": fid, "name": name, "mimeType": mime, "parents": list(parents),
                "created": ms, "modified": ms, "ctime": now_ms(), "seq": self.seq,
                "version": 0, "explicitlyTrashed": False, "trashedTime": None,
                "appProperties": {}, "properties": {}, "deleted": False, "versions": []}

    def new_file(self, fid, name, mime, parent, created=None):
        """Create a live record (caller holds the lock and commits it)."""
        ms = now_ms()
        rec = self._new_rec(fid, name, mime, [parent], created if created is not None else ms)
        rec["ctime"] = ms
        self.files[fid] = rec
        self.children[parent].add(fid)
        if fid in self.generated:
            self.generated.discard(fid)
            self._journal({"gu": [fid]})
        return rec

    def resolve(self, fid):
        return self.root_id if fid == "root" else fid

    def get_live(self, fid):
        rec = self.files.get(self.resolve(fid))
        if rec is None or rec.get("deleted"):
            raise DriveError(404, "notFound", "File not found: %s." % fid, "fileId", "parameter")
        return rec

    def id_in_use(self, fid):
        return fid in self.files

    def commit(self, rec, removed=False):
        """Record a change to rec: bump its version, add to the changes feed,
        journal it. Caller holds the lock."""
        self.version_counter += 1
        rec["version"] = self.version_counter
        if rec["versions"] and rec["versions"][-1]["version"] is None:
            rec["versions"][-1]["version"] = rec["version"]  # the content it brought
        self.change_counter += 1
        self._append_change(self.change_counter, rec["id"], now_ms(), removed)
        self._journal({"f": rec})
        self._journal({"c": self.changes[-1]})

    def set_parent(self, rec, new_parent):
        for p in rec["parents"]:
            self.children[p].discard(rec["id"])
        rec["parents"] = [new_parent]
        self.children[new_parent].add(rec["id"])

    def ancestors(self, rec):
        """Yield parent records up to a root (stops on cycles)."""
        seen = set()
        cur = rec
        while cur["parents"]:
            pid = cur["parents"][0]
            if pid in seen:
                return
            seen.add(pid)
            cur = self.files.get(pid)
            if cur is None:
                return
            yield cur

    def is_trashed(self, rec):
        if rec.get("explicitlyTrashed"):
            return True
        return any(a.get("explicitlyTrashed") for a in self.ancestors(rec))

    def drive_of(self, rec):
        if rec["id"] == self.drive_id:
            return self.drive_id
        for a in self.ancestors(rec):
            if a["id"] == self.drive_id:
                return self.drive_id
        return None

    def descendants(self, rec):
        out = []
        stack = [rec["id"]]
        seen = {rec["id"]}
        while stack:
            for cid in list(self.children.get(stack.pop(), ())):
                if cid not in seen:
                    seen.add(cid)
                    out.append(self.files[cid])
                    stack.append(cid)
        return out

    def mark_deleted(self, rec):
        for p in rec["parents"]:
            self.children[p].discard(rec["id"])
        rec["deleted"] = True
        self.commit(rec, removed=True)

    # ---- content -----------------------------------------------------
    def tmp_path(self, tag="up"):
        return os.path.join(self.tmp_dir, "%s-%s" % (tag, secrets.token_hex(8)))

    def add_version(self, rec, src_path, md5, size, link=False):
        """Make src_path (a finished temp file, or a blob when link=True) the
        file's newest content version. src_path None means empty content."""
        idx = len(rec["versions"])
        blob = None
        if src_path is not None:
            blob = "%s.%d" % (rec["id"], idx)
            dst = os.path.join(self.blob_dir, blob)
            if link:
                try:
                    os.link(src_path, dst)
                except OSError:
                    import shutil
                    shutil.copyfile(src_path, dst)
            else:
                os.replace(src_path, dst)
        rec["versions"].append({"md5": md5, "size": size, "time": now_ms(), "blob": blob,
                                "rev": "0B" + secrets.token_urlsafe(24)[:30], "version": None})

    def content(self, rec, index=-1):
        """(path or None, size, md5) of a content version."""
        if not rec["versions"]:
            return None, 0, EMPTY_MD5
        v = rec["versions"][index]
        path = os.path.join(self.blob_dir, v["blob"]) if v["blob"] else None
        return path, v["size"], v["md5"]

    def usage(self):
        total = trash = 0
        for rec in self.files.values():
            if rec.get("deleted") or not rec["versions"]:
                continue
            size = rec["versions"][-1]["size"]
            total += size
            if self.is_trashed(rec):
                trash += size
        return total, trash

    # ---- JSON views ----------------------------------------------------
    def file_json(self, rec):
        """The full File resource (fields=* view)."""
        fid = rec["id"]
        folder = is_folder(rec)
        trashed = self.is_trashed(rec)
        drive = self.drive_of(rec)
        d = {
            "kind": "drive#file",
            "id": fid,
            "name": rec["name"],
            "mimeType": rec["mimeType"],
            "starred": bool(rec.get("starred", False)),
            "trashed": trashed,
            "explicitlyTrashed": bool(rec.get("explicitlyTrashed")),
            "spaces": ["drive"],
            "version": str(rec["version"]),
            "webViewLink": ("https://drive.google.com/drive/folders/%s" if folder
                            else "https://drive.google.com/file/d/%s/view?usp=drivesdk") % fid,
            "iconLink": "https://drive-thirdparty.googleusercontent.com/16/type/" + rec["mimeType"],
            "hasThumbnail": False,
            "thumbnailVersion": "0",
            "viewedByMe": True,
            "viewedByMeTime": fmt_time(rec["modified"]),
            "createdTime": fmt_time(rec["created"]),
            "modifiedTime": fmt_time(rec["modified"]),
            "modifiedByMeTime": fmt_time(rec["modified"]),
            "modifiedByMe": True,
            "lastModifyingUser": USER,
            "shared": False,
            "writersCanShare": True,
            "viewersCanCopyContent": True,
            "copyRequiresWriterPermission": False,
            "isAppAuthorized": False,
            "quotaBytesUsed": "0",
            "capabilities": {
                "canAddChildren": folder, "canCopy": not folder, "canDelete": True,
                "canDownload": not folder, "canEdit": True, "canListChildren": folder,
                "canModifyContent": True, "canMoveItemWithinDrive": True,
                "canReadRevisions": not folder, "canRemoveChildren": folder,
                "canRename": True, "canShare": True, "canTrash": True, "canUntrash": True,
            },
        }
        if rec["parents"]:
            d["parents"] = list(rec["parents"])
        if drive:
            d["driveId"] = drive
            d["teamDriveId"] = drive
        else:
            d["ownedByMe"] = True
            d["owners"] = [USER]
        if trashed and rec.get("trashedTime"):
            d["trashedTime"] = fmt_time(rec["trashedTime"])
        if rec.get("description") is not None:
            d["description"] = rec["description"]
        if rec.get("originalFilename") is not None:
            d["originalFilename"] = rec["originalFilename"]
        if rec.get("appProperties"):
            d["appProperties"] = dict(rec["appProperties"])
        if rec.get("properties"):
            d["properties"] = dict(rec["properties"])
        if has_content(rec):
            _, size, md5 = self.content(rec)
            d["size"] = str(size)
            d["quotaBytesUsed"] = str(size)
            d["md5Checksum"] = md5
            d["headRevisionId"] = rec["versions"][-1]["rev"] if rec["versions"] else "0B0"
            d["webContentLink"] = "https://drive.google.com/uc?id=%s&export=download" % fid
            d.setdefault("originalFilename", rec["name"])
            name = rec["name"]
            if "." in name.strip("."):
                d["fileExtension"] = name.rsplit(".", 1)[1]
                d["fullFileExtension"] = name.split(".", 1)[1] if not name.startswith(".") else name.rsplit(".", 1)[1]
        return d

    # ---- list ----------------------------------------------------------
    def list_files(self, ast, order, page_token, page_size, q_sig, name_delay=0.0,
                   short_rng=None):
        """One page of a files.list: (records, next_token or None)."""
        with self.lock:
            cand = candidate_parents(ast)
            if cand is not None:
                ids = set()
                for p in cand:
                    ids |= self.children.get(self.resolve(p), set())
            else:
                ids = [fid for fid, r in self.files.items()
                       if not r.get("deleted") and r.get("role") is None]
            delay_ms = name_delay * 1000 if name_delay and has_name_clause(ast) else 0
            now = now_ms()
            matches = []
            for fid in ids:
                rec = self.files[fid]
                if rec.get("deleted") or rec.get("role"):
                    continue
                if delay_ms and now - rec["ctime"] < delay_ms:
                    continue  # the name index has not caught up yet
                if evaluate(ast, _View(self, rec)):
                    matches.append(rec)
            keyed = [(self._sort_key(r, order), r) for r in matches]
            cmp = functools.cmp_to_key(lambda a, b: _cmp_keys(a[0], b[0], order))
            keyed.sort(key=cmp)
            if page_token:
                last = _decode_token(page_token, q_sig)
                keyed = [kr for kr in keyed if _cmp_keys(kr[0], last, order) > 0]
            page = keyed[:page_size]
            more = len(keyed) > page_size
            if short_rng is not None and page:
                # Drive may return short (even empty) pages before the end.
                cut = short_rng.randint(0, len(page))
                if cut < len(page):
                    page = page[:cut]
                    more = True
            token = None
            if more:
                if page:
                    token = _encode_token(page[-1][0], q_sig)
                else:
                    token = page_token or _encode_token(None, q_sig)
            return [r for _, r in page], token

    def _sort_key(self, rec, order):
        return [_ORDER_KEYS[k](rec) for k, _ in order] + [rec["seq"], rec["id"]]

    # ---- changes ---------------------------------------------------------
    def changes_page(self, token, page_size, include_removed):
        with self.lock:
            i = bisect_left(self.change_ids, token)
            out = []
            while i < len(self.changes) and len(out) < page_size:
                cid, fid, ms, removed = self.changes[i]
                i += 1
                if self.latest_change.get(fid) != cid:
                    continue  # superseded by a later change to the same file
                if removed and not include_removed:
                    continue
                out.append((cid, fid, ms, removed))
            # Skip superseded tails so "more" is exact.
            while i < len(self.changes) and self.latest_change.get(self.changes[i][1]) != self.changes[i][0]:
                i += 1
            if i < len(self.changes):
                return out, str(self.changes[i][0]), None
            return out, None, str(self.change_counter + 1)


def _cmp_keys(a, b, order):
    if b is None:
        return 1
    for i, x in enumerate(a):
        y = b[i]
        if x == y:
            continue
        r = -1 if x < y else 1
        if i < len(order) and order[i][1]:
            r = -r
        return r
    return 0


def _encode_token(key, sig):
    raw = json.dumps({"k": key, "s": sig}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token, sig):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = json.loads(raw)
        if obj["s"] != sig:
            raise ValueError
        return obj["k"]
    except (ValueError, KeyError, TypeError):
        raise invalid_param("pageToken", "Invalid Value")
