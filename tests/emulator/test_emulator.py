"""test_emulator.py — the Drive emulator's API surface: auth, files
create/get/list/update/delete/copy, q and fields, paging, ranged
downloads, generateIds, about, the changes feed, versions, and the HTTP
details clients depend on (Date, keep-alive, Expect: 100-continue).
Uploads, faults, JWT/TLS and restarts have their own test files."""

import hashlib
import json
import re
import socket
import time
import urllib.parse

import pytest

FOLDER = "application/vnd.google-apps.folder"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def q_quote(s):
    """Quote a string for Drive's q: backslash first, then the quote."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def error_reason(resp):
    return resp.json()["error"]["errors"][0]["reason"]


# ---- auth -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/token", "/oauth2/v4/token", "/o/oauth2/token"])
def test_refresh_grant_on_every_token_path(emulator, path):
    body = urllib.parse.urlencode({"grant_type": "refresh_token", "client_id": "x",
                                   "client_secret": "y", "refresh_token": "test-refresh-token"})
    r = emulator.raw("POST", path, body.encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600 and tok["scope"]
    assert emulator.request("GET", "/drive/v3/files/root", token=tok["access_token"]).status == 200


def test_unknown_refresh_token_is_invalid_grant(emulator):
    body = b"grant_type=refresh_token&client_id=a&client_secret=b&refresh_token=nope"
    r = emulator.raw("POST", "/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400
    assert r.json() == {"error": "invalid_grant",
                        "error_description": "Token has been expired or revoked."}


def test_extra_refresh_tokens_from_options(emulator_factory):
    emu = emulator_factory(quiet=True, refresh_token=["tok-a", "tok-b"])
    assert emu.access_token("tok-b")
    assert emu.access_token("test-refresh-token")


def test_api_needs_a_valid_bearer_token(emulator):
    for token in (None, "ya29.bogus"):
        r = emulator.request("GET", "/drive/v3/files", token=token)
        assert r.status == 401
        assert error_reason(r) == "authError"
        assert "Bearer" in r.headers["WWW-Authenticate"]
        assert r.json()["error"]["code"] == 401


def test_expire_tokens_forces_a_refresh(emulator):
    old = emulator.access_token()
    assert emulator.request("GET", "/drive/v3/files").status == 200
    emulator.expire_tokens()
    assert emulator.request("GET", "/drive/v3/files", token=old).status == 401
    new = emulator.access_token()
    assert new != old
    assert emulator.request("GET", "/drive/v3/files").status == 200


def test_short_token_lifetime(emulator_factory):
    emu = emulator_factory(quiet=True, token_lifetime=1)
    tok = emu.access_token()
    assert emu.request("GET", "/drive/v3/files", token=tok).status == 200
    time.sleep(1.2)
    assert emu.request("GET", "/drive/v3/files", token=tok).status == 401


def test_revoked_refresh_token(emulator):
    emulator.control("POST", "/_emu/refresh-tokens", {"revoke": ["test-refresh-token"],
                                                      "add": ["other"]})
    with pytest.raises(Exception):
        emulator.access_token()
    assert emulator.access_token("other")


# ---- files: create / get ------------------------------------------------------

def test_root_alias_and_stable_root(emulator):
    root = emulator.get("root", "id,name,mimeType")
    assert root["name"] == "My Drive" and root["mimeType"] == FOLDER
    assert emulator.info()["root_id"] == root["id"]
    assert emulator.get(root["id"], "id")["id"] == root["id"]


def test_every_response_has_date_header(emulator):
    for r in (emulator.request("GET", "/drive/v3/files"),
              emulator.request("GET", "/drive/v3/files/nope"),
              emulator.raw("GET", "/_emu/stats")):
        assert r.headers["Date"].endswith("GMT")
        assert r.headers["Content-Length"] is not None


def test_create_folder_and_file_resource_shape(emulator):
    folder = emulator.create_folder("runs", fields="*")
    assert folder["mimeType"] == FOLDER and "size" not in folder and "md5Checksum" not in folder
    r = emulator.request("POST", "/drive/v3/files", params={"fields": "*"},
                         json={"name": "empty.bin", "parents": [folder["id"]],
                               "appProperties": {"k": "v"}, "properties": {"p": "q"}})
    assert r.status == 200
    f = r.json()
    assert f["kind"] == "drive#file"
    assert len(f["id"]) == 33
    assert f["parents"] == [folder["id"]]
    assert f["size"] == "0" and f["quotaBytesUsed"] == "0" and isinstance(f["version"], str)
    assert f["md5Checksum"] == EMPTY_MD5 and f["headRevisionId"]
    assert TIME_RE.match(f["createdTime"]) and TIME_RE.match(f["modifiedTime"])
    assert f["trashed"] is False
    assert f["appProperties"] == {"k": "v"} and f["properties"] == {"p": "q"}
    assert f["mimeType"] == "application/octet-stream"


def test_default_fields_are_kind_id_name_mimetype(emulator):
    f = emulator.upload("x.txt", b"abc")
    r = emulator.request("GET", "/drive/v3/files/" + f["id"])
    assert set(r.json()) == {"kind", "id", "name", "mimeType"}
    r = emulator.request("GET", "/drive/v3/files")
    page = r.json()
    assert page["kind"] == "drive#fileList" and "incompleteSearch" in page
    assert set(page["files"][0]) == {"kind", "id", "name", "mimeType"}


def test_fields_projection(emulator):
    f = emulator.upload("x.txt", b"abc")
    r = emulator.request("GET", "/drive/v3/files", params={"fields": "nextPageToken,files(id,name)"})
    assert r.json() == {"files": [{"id": f["id"], "name": "x.txt"}]}
    r = emulator.request("GET", "/drive/v3/files", params={"fields": "files/id"})
    assert r.json() == {"files": [{"id": f["id"]}]}
    r = emulator.request("GET", "/drive/v3/files", params={"fields": "*"})
    assert r.json()["files"][0]["md5Checksum"] == hashlib.md5(b"abc").hexdigest()
    r = emulator.request("GET", "/drive/v3/files/" + f["id"], params={"fields": "size,md5Checksum"})
    assert r.json() == {"size": "3", "md5Checksum": hashlib.md5(b"abc").hexdigest()}
    r = emulator.request("GET", "/drive/v3/files", params={"fields": "files(id"})
    assert r.status == 400


def test_get_unknown_file_is_drive_not_found(emulator):
    r = emulator.request("GET", "/drive/v3/files/1nosuchfile")
    assert r.status == 404
    err = r.json()["error"]
    assert err["message"] == "File not found: 1nosuchfile."
    assert err["errors"][0] == {"domain": "global", "reason": "notFound",
                                "message": "File not found: 1nosuchfile.",
                                "location": "fileId", "locationType": "parameter"}


def test_ignored_parameters_are_accepted(emulator):
    f = emulator.upload("x.txt", b"abc")
    params = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true", "corpora": "user",
              "prettyPrint": "false", "alt": "json", "keepRevisionForever": "false",
              "acknowledgeAbuse": "true"}
    assert emulator.request("GET", "/drive/v3/files", params=params).status == 200
    assert emulator.request("GET", "/drive/v3/files/" + f["id"], params=params).status == 200


def test_duplicate_names_allowed(emulator):
    a = emulator.upload("same.txt", b"1")
    b = emulator.upload("same.txt", b"2")
    assert a["id"] != b["id"]
    found = emulator.list_all("name = 'same.txt' and 'root' in parents")
    assert sorted(x["id"] for x in found) == sorted([a["id"], b["id"]])


def test_version_is_global_and_monotonic(emulator):
    a = emulator.upload("a", b"1")
    b = emulator.upload("b", b"2")
    assert int(b["version"]) > int(a["version"])
    r = emulator.request("PATCH", "/drive/v3/files/" + a["id"], params={"fields": "version"},
                         json={"name": "a2"})
    assert int(r.json()["version"]) > int(b["version"])


# ---- list: q, paging, order ----------------------------------------------------

def test_q_language(emulator):
    d = emulator.create_folder("dir")
    sub = emulator.create_folder("Sub Folder", d["id"])
    a = emulator.upload("HelloWorld.txt", b"a", d["id"], metadata={"appProperties": {"role": "lock"}})
    b = emulator.upload("report final.csv", b"b", d["id"], metadata={"mimeType": "text/csv"})
    c = emulator.upload("other.bin", b"c", sub["id"])
    in_d = "'%s' in parents" % d["id"]

    def names(q):
        return sorted(f["name"] for f in emulator.list_all(q))

    assert names(in_d) == ["HelloWorld.txt", "Sub Folder", "report final.csv"]
    assert names(in_d + " and name = 'helloworld.TXT'") == ["HelloWorld.txt"]  # case-insensitive
    assert names(in_d + " and name contains 'Hello'") == ["HelloWorld.txt"]
    assert names(in_d + " and name contains 'World'") == []  # prefix-of-word, like Drive
    assert names(in_d + " and name contains 'fin'") == ["report final.csv"]
    assert names(in_d + " and mimeType = '%s'" % FOLDER) == ["Sub Folder"]
    assert names(in_d + " and mimeType != '%s'" % FOLDER) == ["HelloWorld.txt", "report final.csv"]
    assert names(in_d + " and (name = 'other.bin' or mimeType = 'text/csv')") == ["report final.csv"]
    assert names(in_d + " and not name contains 'report'") == ["HelloWorld.txt", "Sub Folder"]
    assert names("appProperties has { key='role' and value='lock' }") == ["HelloWorld.txt"]
    assert names("'%s' in parents or '%s' in parents" % (d["id"], sub["id"])) == [
        "HelloWorld.txt", "Sub Folder", "other.bin", "report final.csv"]
    assert names("'root' in parents") == ["dir"]
    assert names("modifiedTime > '2000-01-01T00:00:00' and name = 'other.bin'") == ["other.bin"]
    assert names("modifiedTime > '2999-01-01T00:00:00'") == []
    assert names("trashed = true") == []
    assert names("trashed=false and name='other.bin'") == ["other.bin"]
    del a, b, c
    for bad in ("name = ", "name = 'x", "foo = 'x'", "name = 'a' and", "'x' in kids", "name ~ 'x'"):
        r = emulator.request("GET", "/drive/v3/files", params={"q": bad})
        assert r.status == 400, bad
        assert error_reason(r) == "invalid"


@pytest.mark.parametrize("name", ["it's", "back\\slash", "both\\'mixed'", "ünïcødé ✓ 日本",
                                  "quote\"double", "a/b"])
def test_q_escapes(emulator, name):
    f = emulator.upload(name, b"x")
    emulator.upload(name + "-decoy", b"y")
    found = emulator.list_all("name = %s" % q_quote(name))
    assert [x["id"] for x in found] == [f["id"]]
    assert found[0]["name"] == name


def test_q_rejects_unknown_escape(emulator):
    r = emulator.request("GET", "/drive/v3/files", params={"q": r"name = 'a\b'"})
    assert r.status == 400


def test_trashed_files_listed_unless_excluded(emulator):
    f = emulator.upload("t.txt", b"x")
    emulator.request("PATCH", "/drive/v3/files/" + f["id"], json={"trashed": True})
    assert [x["trashed"] for x in emulator.list_all("name = 't.txt'")] == [True]
    assert emulator.list_all("name = 't.txt' and trashed = false") == []


def test_paging_over_more_than_1000_entries(emulator):
    folder = emulator.create_folder("many")
    conn = emulator.connection()
    token = emulator.access_token()
    meta_prefix = '{"parents":["%s"],"name":"f%%05d"}' % folder["id"]
    created = set()
    for i in range(1105):
        conn.request("POST", "/drive/v3/files?fields=id", body=(meta_prefix % i).encode(),
                     headers={"Authorization": "Bearer " + token,
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        created.add(json.loads(resp.read())["id"])
    q = "'%s' in parents" % folder["id"]
    # The largest page is 1000: two pages.
    first = emulator.request("GET", "/drive/v3/files", params={
        "q": q, "pageSize": 1000, "fields": "nextPageToken,files(id)"}).json()
    assert len(first["files"]) == 1000 and first["nextPageToken"]
    second = emulator.request("GET", "/drive/v3/files", params={
        "q": q, "pageSize": 1000, "pageToken": first["nextPageToken"],
        "fields": "nextPageToken,files(id)"}).json()
    assert len(second["files"]) == 105 and "nextPageToken" not in second
    assert {f["id"] for f in first["files"] + second["files"]} == created
    # The default page size is 100, and nextPageToken must be asked for.
    page = emulator.request("GET", "/drive/v3/files", params={"q": q, "fields": "files(id)"}).json()
    assert len(page["files"]) == 100 and "nextPageToken" not in page
    # Ordered paging by name, descending, in pages of 300.
    names = [f["name"] for f in emulator.list_all(q, fields="nextPageToken,files(name)",
                                                  page_size=300, orderBy="name desc")]
    assert names == sorted(("f%05d" % i for i in range(1105)), reverse=True)


def test_page_size_bounds_and_bad_token(emulator):
    for size in (0, 1001, "x"):
        assert emulator.request("GET", "/drive/v3/files", params={"pageSize": size}).status == 400
    r = emulator.request("GET", "/drive/v3/files", params={"pageToken": "garbage"})
    assert r.status == 400


def test_order_by(emulator):
    names = ["b", "C", "a"]
    ids = []
    for n in names:
        ids.append(emulator.upload(n, b"x")["id"])
        time.sleep(0.005)  # distinct createdTimes (ms): a tie has no order
    def order(spec):
        return [f["name"] for f in emulator.list_all(orderBy=spec, fields="nextPageToken,files(name)")]
    assert order("name") == ["a", "b", "C"]
    assert order("createdTime") == names
    assert order("createdTime desc") == names[::-1]
    emulator.request("PATCH", "/drive/v3/files/" + ids[0], json={"modifiedTime": "2001-01-01T00:00:00.000Z"})
    assert order("modifiedTime")[0] == "b"
    emulator.create_folder("zdir")
    assert order("folder,name") == ["zdir", "a", "b", "C"]
    assert emulator.request("GET", "/drive/v3/files", params={"orderBy": "bogus"}).status == 400


# ---- downloads -------------------------------------------------------------------

def test_download_full_and_ranges(emulator):
    data = bytes(range(256)) * 40
    f = emulator.upload("r.bin", data)
    path = "/drive/v3/files/%s?alt=media" % f["id"]
    r = emulator.request("GET", path)
    assert r.status == 200 and r.body == data and int(r.headers["Content-Length"]) == len(data)
    r = emulator.request("GET", path, headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == data[10:20]
    assert r.headers["Content-Range"] == "bytes 10-19/%d" % len(data)
    r = emulator.request("GET", path, headers={"Range": "bytes=10000-"})
    assert r.status == 206 and r.body == data[10000:]
    r = emulator.request("GET", path, headers={"Range": "bytes=-5"})
    assert r.status == 206 and r.body == data[-5:]
    r = emulator.request("GET", path, headers={"Range": "bytes=10000-99999"})
    assert r.status == 206 and r.body == data[10000:]
    r = emulator.request("GET", path, headers={"Range": "bytes=%d-" % len(data)})
    assert r.status == 416 and r.headers["Content-Range"] == "bytes */%d" % len(data)


def test_download_of_a_revision_after_the_file_changed(emulator):
    """revisions.get with alt=media serves the bytes of the content the
    file had under that headRevisionId, Range included, after a media
    update replaced it; an unknown revision is 404."""
    f = emulator.upload("rv.bin", b"old content")
    rev = emulator.request("GET", "/drive/v3/files/%s?fields=headRevisionId" % f["id"]).json()[
        "headRevisionId"]
    r = emulator.request("PATCH", "/upload/drive/v3/files/%s?uploadType=media" % f["id"],
                         body=b"new, longer content")
    assert r.status == 200, r.body
    assert emulator.download(f["id"]) == b"new, longer content"
    path = "/drive/v3/files/%s/revisions/%s?alt=media" % (f["id"], rev)
    r = emulator.request("GET", path)
    assert r.status == 200 and r.body == b"old content"
    r = emulator.request("GET", path, headers={"Range": "bytes=4-"})
    assert r.status == 206 and r.body == b"content"
    r = emulator.request("GET", "/drive/v3/files/%s/revisions/nope?alt=media" % f["id"])
    assert r.status == 404


def test_download_folder_is_403(emulator):
    d = emulator.create_folder("d")
    r = emulator.request("GET", "/drive/v3/files/%s?alt=media" % d["id"])
    assert r.status == 403 and error_reason(r) == "fileNotDownloadable"


def test_download_empty_file(emulator):
    r = emulator.request("POST", "/drive/v3/files", json={"name": "e"})
    assert emulator.download(r.json()["id"]) == b""


# ---- update / move / trash / delete / copy ------------------------------------------

def test_update_metadata(emulator):
    f = emulator.upload("a.txt", b"x", metadata={"appProperties": {"keep": "1", "drop": "2"}})
    r = emulator.request("PATCH", "/drive/v3/files/" + f["id"], params={"fields": "*"}, json={
        "name": "b.txt", "modifiedTime": "2020-02-03T04:05:06.789Z",
        "appProperties": {"drop": None, "new": "3"}, "properties": {"p": "1"},
        "mimeType": "text/plain", "description": "d"})
    assert r.status == 200
    g = r.json()
    assert g["name"] == "b.txt" and g["modifiedTime"] == "2020-02-03T04:05:06.789Z"
    assert g["appProperties"] == {"keep": "1", "new": "3"} and g["properties"] == {"p": "1"}
    assert g["mimeType"] == "text/plain" and g["description"] == "d"
    assert int(g["version"]) > int(f["version"])
    assert g["md5Checksum"] == f["md5Checksum"]


def test_update_without_modified_time_moves_it_forward(emulator):
    f = emulator.upload("a.txt", b"x", metadata={"modifiedTime": "2001-01-01T00:00:00.000Z"})
    assert f["modifiedTime"] == "2001-01-01T00:00:00.000Z"
    g = emulator.request("PATCH", "/drive/v3/files/" + f["id"], params={"fields": "modifiedTime"},
                         json={"appProperties": {"lease": "x"}}).json()
    assert g["modifiedTime"] > "2020"


@pytest.mark.parametrize("body", [{"parents": ["root"]}, {"md5Checksum": "x"}, {"size": "3"},
                                  {"id": "1abc"}, {"version": "9"}])
def test_read_only_fields_are_field_not_writable(emulator, body):
    f = emulator.upload("a.txt", b"x")
    r = emulator.request("PATCH", "/drive/v3/files/" + f["id"], json=body)
    assert r.status == 403 and error_reason(r) == "fieldNotWritable"


def test_move_with_add_and_remove_parents(emulator):
    a = emulator.create_folder("a")
    b = emulator.create_folder("b")
    f = emulator.upload("f", b"x", a["id"])
    r = emulator.request("PATCH", "/drive/v3/files/" + f["id"],
                         params={"addParents": b["id"], "removeParents": a["id"], "fields": "parents"},
                         json={"name": "g"})
    assert r.status == 200 and r.json()["parents"] == [b["id"]]
    assert emulator.list_all("'%s' in parents" % a["id"]) == []
    assert [x["name"] for x in emulator.list_all("'%s' in parents" % b["id"])] == ["g"]
    r = emulator.request("PATCH", "/drive/v3/files/" + f["id"], params={"addParents": a["id"]}, json={})
    assert r.status == 403 and error_reason(r) == "cannotAddParent"
    r = emulator.request("PATCH", "/drive/v3/files/" + b["id"],
                         params={"addParents": b["id"], "removeParents": "root"}, json={})
    assert r.status == 400  # a folder cannot go inside itself


def test_trash_folder_trashes_descendants(emulator):
    d = emulator.create_folder("d")
    f = emulator.upload("f", b"x", d["id"])
    r = emulator.request("PATCH", "/drive/v3/files/" + d["id"], params={"fields": "trashed,explicitlyTrashed"},
                         json={"trashed": True})
    assert r.json() == {"trashed": True, "explicitlyTrashed": True}
    child = emulator.get(f["id"], "trashed,explicitlyTrashed")
    assert child == {"trashed": True, "explicitlyTrashed": False}
    assert emulator.list_all("'%s' in parents and trashed = false" % d["id"]) == []
    emulator.request("PATCH", "/drive/v3/files/" + d["id"], json={"trashed": False})
    assert emulator.get(f["id"], "trashed")["trashed"] is False


def test_delete_folder_takes_descendants(emulator):
    d = emulator.create_folder("d")
    s = emulator.create_folder("s", d["id"])
    f = emulator.upload("f", b"x", s["id"])
    r = emulator.request("DELETE", "/drive/v3/files/" + d["id"])
    assert r.status == 204 and r.body == b""
    for fid in (d["id"], s["id"], f["id"]):
        assert emulator.request("GET", "/drive/v3/files/" + fid).status == 404
    assert emulator.request("DELETE", "/drive/v3/files/" + d["id"]).status == 404
    deleted = {x["id"]: x["deleted"] for x in emulator.files()}
    assert deleted[f["id"]] and deleted[d["id"]]
    assert emulator.list_all() == []


def test_empty_trash(emulator):
    keep = emulator.upload("keep", b"1")
    gone = emulator.upload("gone", b"2")
    emulator.request("PATCH", "/drive/v3/files/" + gone["id"], json={"trashed": True})
    assert emulator.request("DELETE", "/drive/v3/files/trash").status == 204
    assert [f["id"] for f in emulator.list_all()] == [keep["id"]]


def test_copy(emulator):
    d = emulator.create_folder("d")
    f = emulator.upload("src.bin", b"payload", metadata={"appProperties": {"a": "b"}})
    r = emulator.request("POST", "/drive/v3/files/%s/copy" % f["id"], params={"fields": "*"}, json={})
    c = r.json()
    assert r.status == 200 and c["id"] != f["id"] and c["name"] == "Copy of src.bin"
    assert c["md5Checksum"] == f["md5Checksum"] and c["parents"] == f["parents"]
    assert c["appProperties"] == {"a": "b"}
    r = emulator.request("POST", "/drive/v3/files/%s/copy" % f["id"], params={"fields": "*"},
                         json={"name": "dst.bin", "parents": [d["id"]]})
    c2 = r.json()
    assert c2["name"] == "dst.bin" and c2["parents"] == [d["id"]]
    assert emulator.download(c2["id"]) == b"payload"
    r = emulator.request("POST", "/drive/v3/files/%s/copy" % d["id"], json={})
    assert r.status == 403


# ---- generateIds -----------------------------------------------------------------

def test_generate_ids_and_client_chosen_id(emulator):
    r = emulator.request("GET", "/drive/v3/files/generateIds", params={"count": 3})
    ids = r.json()["ids"]
    assert r.json()["kind"] == "drive#generatedIds" and len(set(ids)) == 3
    r = emulator.request("POST", "/drive/v3/files", params={"fields": "id"},
                         json={"id": ids[0], "name": "mine"})
    assert r.status == 200 and r.json()["id"] == ids[0]
    r = emulator.request("POST", "/drive/v3/files", json={"id": ids[0], "name": "again"})
    assert r.status == 409 and error_reason(r) == "fileIdInUse"
    r = emulator.request("POST", "/drive/v3/files", json={"id": ids[1], "modifiedTime": "not a time"})
    assert r.status == 400  # refused: the id stays usable
    f = emulator.upload("up", b"data", metadata={"id": ids[1]})
    assert f["id"] == ids[1]
    r = emulator.request("POST", "/drive/v3/files", json={"id": "1madeUpByTheClientXXXXXXXXXXXXXXX"})
    assert r.status == 400
    assert emulator.request("GET", "/drive/v3/files/generateIds", params={"count": 1001}).status == 400
    assert len(emulator.request("GET", "/drive/v3/files/generateIds",
                                params={"count": 1000}).json()["ids"]) == 1000


# ---- about, shared drives ------------------------------------------------------------

def test_about(emulator):
    emulator.upload("a", b"12345")
    r = emulator.request("GET", "/drive/v3/about")
    assert r.status == 400  # fields is required
    about = emulator.request("GET", "/drive/v3/about", params={"fields": "user,storageQuota"}).json()
    assert set(about) == {"user", "storageQuota"}
    assert about["user"]["emailAddress"]
    assert about["storageQuota"]["usage"] == "5" and int(about["storageQuota"]["limit"]) > 0


def test_shared_drive(emulator):
    drives = emulator.request("GET", "/drive/v3/drives").json()["drives"]
    assert len(drives) == 1
    did = drives[0]["id"]
    assert emulator.request("GET", "/drive/v3/drives/" + did).json()["id"] == did
    f = emulator.upload("in-shared", b"x", did, fields="id,driveId,parents")
    assert f["driveId"] == did and f["parents"] == [did]
    assert [x["id"] for x in emulator.list_all("'%s' in parents" % did,
                                               driveId=did, corpora="drive")] == [f["id"]]


# ---- changes feed -------------------------------------------------------------------

def changes(emu, token, **params):
    params.setdefault("fields", "*")
    return emu.request("GET", "/drive/v3/changes", params=dict(pageToken=token, **params)).json()


def test_changes_feed(emulator):
    start = emulator.request("GET", "/drive/v3/changes/startPageToken").json()["startPageToken"]
    a = emulator.upload("a", b"1")
    b = emulator.upload("b", b"2")
    c = emulator.upload("c", b"3")
    emulator.request("PATCH", "/drive/v3/files/" + a["id"], json={"name": "a2"})
    emulator.request("PATCH", "/drive/v3/files/" + b["id"], json={"trashed": True})
    emulator.request("DELETE", "/drive/v3/files/" + c["id"])
    page = changes(emulator, start)
    assert "newStartPageToken" in page and "nextPageToken" not in page
    by_id = {ch["fileId"]: ch for ch in page["changes"]}
    assert set(by_id) == {a["id"], b["id"], c["id"]}  # one entry per file: the latest
    for ch in page["changes"]:
        assert ch["kind"] == "drive#change" and ch["changeType"] == "file"
        assert ch["time"].endswith("Z")
    assert by_id[a["id"]]["file"]["name"] == "a2" and by_id[a["id"]]["removed"] is False
    assert by_id[b["id"]]["file"]["trashed"] is True
    assert by_id[c["id"]]["removed"] is True and "file" not in by_id[c["id"]]
    # Nothing new since: empty page, same token onwards.
    again = changes(emulator, page["newStartPageToken"])
    assert again["changes"] == [] and again["newStartPageToken"] == page["newStartPageToken"]
    without_removed = changes(emulator, start, includeRemoved="false")
    assert c["id"] not in {ch["fileId"] for ch in without_removed["changes"]}


def test_changes_paging_and_fields(emulator):
    start = emulator.request("GET", "/drive/v3/changes/startPageToken").json()["startPageToken"]
    ids = [emulator.upload("f%d" % i, b"x")["id"] for i in range(5)]
    seen, token = [], start
    while True:
        page = changes(emulator, token, pageSize=2,
                       fields="nextPageToken,newStartPageToken,changes(fileId,file(name,parents))")
        assert len(page["changes"]) <= 2
        for ch in page["changes"]:
            assert set(ch) == {"fileId", "file"} and set(ch["file"]) == {"name", "parents"}
        seen += [ch["fileId"] for ch in page["changes"]]
        if "nextPageToken" not in page:
            assert page["newStartPageToken"]
            break
        token = page["nextPageToken"]
    assert seen == ids
    default = emulator.request("GET", "/drive/v3/changes", params={"pageToken": start}).json()
    assert set(default["changes"][0]["file"]) == {"kind", "id", "name", "mimeType"}
    assert emulator.request("GET", "/drive/v3/changes").status == 400


# ---- versions & control views ----------------------------------------------------------

def test_every_content_version_is_kept(emulator):
    f = emulator.upload("v.txt", b"one")
    for body in (b"two", b"three"):
        r = emulator.request("PATCH", "/upload/drive/v3/files/%s?uploadType=media" % f["id"], body=body,
                             headers={"Content-Type": "text/plain"})
        assert r.status == 200
    emulator.request("DELETE", "/drive/v3/files/" + f["id"])
    entry = [x for x in emulator.versions()["files"] if x["id"] == f["id"]][0]
    assert entry["deleted"] is True and entry["name"] == "v.txt"
    assert [v["md5"] for v in entry["versions"]] == [hashlib.md5(b).hexdigest()
                                                    for b in (b"one", b"two", b"three")]
    assert [v["size"] for v in entry["versions"]] == ["3", "3", "5"]
    assert all(TIME_RE.match(v["time"]) for v in entry["versions"])
    assert [emulator.version_bytes(f["id"], i) for i in range(3)] == [b"one", b"two", b"three"]
    versions = [int(v["version"]) for v in entry["versions"]]
    assert versions == sorted(versions)


# ---- HTTP details ----------------------------------------------------------------------

def test_keep_alive_connection_reuse(emulator):
    token = emulator.access_token()
    conn = emulator.connection()
    conn.request("GET", "/drive/v3/files/root?fields=id", headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    r.read()
    sock = conn.sock
    for i in range(5):
        conn.request("POST", "/upload/drive/v3/files?uploadType=media&fields=id", body=b"x" * (i * 1000),
                     headers={"Authorization": "Bearer " + token, "Content-Type": "text/plain"})
        r = conn.getresponse()
        assert r.status == 200
        fid = json.loads(r.read())["id"]
        conn.request("GET", "/drive/v3/files/%s?alt=media" % fid,
                     headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        assert r.read() == b"x" * (i * 1000)
        conn.request("GET", "/drive/v3/files/nope", headers={"Authorization": "Bearer " + token})
        r = conn.getresponse()
        assert r.status == 404
        r.read()
    assert conn.sock is sock  # never reconnected


def _raw_exchange(emu, head, body=None, wait_continue=True):
    port = emu.port
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head)
    got = b""
    if wait_continue:
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    if body is not None and got.startswith(b"HTTP/1.1 100"):
        s.sendall(body)
        got = got.split(b"\r\n\r\n", 1)[1]
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
        if b"\r\n\r\n" in got:
            head_part, rest = got.split(b"\r\n\r\n", 1)
            m = re.search(rb"Content-Length: (\d+)", head_part)
            if m and len(rest) >= int(m.group(1)):
                break
    s.close()
    return got


def test_expect_100_continue(emulator):
    token = emulator.access_token()
    body = b"z" * 5000
    head = ("POST /upload/drive/v3/files?uploadType=media&fields=size HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Bearer %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            "Expect: 100-continue\r\n\r\n" % (token, len(body))).encode()
    got = _raw_exchange(emulator, head, body)
    assert got.startswith(b"HTTP/1.1 200")
    assert got.endswith(b'{"size":"5000"}')
    # Refused before the body: the final status comes without a 100.
    head = head.replace(token.encode(), b"bad-token")
    got = _raw_exchange(emulator, head, body)
    assert got.startswith(b"HTTP/1.1 401") and b"Connection: close" in got


def test_chunked_request_body(emulator):
    token = emulator.access_token()
    conn = emulator.connection()
    conn.request("POST", "/upload/drive/v3/files?uploadType=media&fields=size,md5Checksum",
                 body=iter([b"abc", b"defg", b"h" * 100000]), encode_chunked=True,
                 headers={"Authorization": "Bearer " + token, "Content-Type": "text/plain",
                          "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    out = json.loads(r.read())
    assert r.status == 200 and out["size"] == str(7 + 100000)
    assert out["md5Checksum"] == hashlib.md5(b"abcdefg" + b"h" * 100000).hexdigest()


def test_concurrent_clients(emulator):
    """Parallel uploads, lists, downloads and deletes (vectur runs several
    transfers at once): every answer is right and nothing is a 500."""
    import threading
    token = emulator.access_token()
    folder = emulator.create_folder("par")
    errors = []

    def worker(n):
        try:
            conn = emulator.connection()
            auth = {"Authorization": "Bearer " + token}
            for i in range(15):
                data = ("%d-%d-" % (n, i)).encode() * (1000 + i * 97)
                conn.request("POST", "/upload/drive/v3/files?uploadType=media&fields=id,md5Checksum",
                             body=data, headers=dict(auth, **{"Content-Type": "text/plain"}))
                r = conn.getresponse()
                f = json.loads(r.read())
                assert r.status == 200 and f["md5Checksum"] == hashlib.md5(data).hexdigest()
                conn.request("PATCH", "/drive/v3/files/%s?addParents=%s&removeParents=root" % (
                    f["id"], folder["id"]), body=b'{"name":"w%d-%d"}' % (n, i),
                    headers=dict(auth, **{"Content-Type": "application/json"}))
                r = conn.getresponse()
                assert r.status == 200, r.read()
                r.read()
                conn.request("GET", "/drive/v3/files/%s?alt=media" % f["id"], headers=auth)
                r = conn.getresponse()
                assert r.read() == data
                conn.request("GET", "/drive/v3/files?q=%s&pageSize=7&fields=nextPageToken,files(id)"
                             % urllib.parse.quote("'%s' in parents" % folder["id"]), headers=auth)
                r = conn.getresponse()
                assert r.status == 200
                r.read()
                if i % 3 == 0:
                    conn.request("DELETE", "/drive/v3/files/" + f["id"], headers=auth)
                    r = conn.getresponse()
                    assert r.status == 204
                    r.read()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = sorted(f["name"] for f in emulator.list_all("'%s' in parents" % folder["id"]))
    assert names == sorted("w%d-%d" % (n, i) for n in range(8) for i in range(15) if i % 3)
