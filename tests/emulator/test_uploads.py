"""test_uploads.py — the emulator's upload paths: simple and multipart
uploads and updates, and the resumable protocol exactly as
reference/drive-api.md describes it (Location, 308 + Range, status
queries, the 256 KiB rule, unknown totals, resuming after a reset or an
error, a lost final response, and a session surviving a restart)."""

import hashlib
import http.client
import os
import urllib.parse

KIB = 1024
UNIT = 256 * KIB


def blob(n, seed=0):
    """n deterministic, non-repeating-ish bytes."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += hashlib.sha256(str(i).encode()).digest()
        i += 1
    return bytes(out[:n])


def start_session(emu, meta=None, total=None, file_id=None, params=None):
    headers = {"X-Upload-Content-Type": "application/octet-stream"}
    if total is not None:
        headers["X-Upload-Content-Length"] = str(total)
    p = {"uploadType": "resumable", "fields": "id,name,size,md5Checksum,version,parents"}
    p.update(params or {})
    if file_id:
        r = emu.request("PATCH", "/upload/drive/v3/files/" + file_id, json=meta or {},
                        headers=headers, params=p)
    else:
        r = emu.request("POST", "/upload/drive/v3/files", json=meta or {"name": "big.bin"},
                        headers=headers, params=p)
    assert r.status == 200, r
    loc = r.headers["Location"]
    assert loc.startswith(emu.url + "/upload/drive/v3/files") and "upload_id=" in loc
    return loc


def put(emu, loc, data=b"", content_range=None, method="PUT", token=False):
    headers = {"Content-Type": "application/octet-stream"}
    if content_range:
        headers["Content-Range"] = content_range
    return emu.request(method, loc, body=data, headers=headers, token=token)


def status_query(emu, loc, total="*"):
    return put(emu, loc, b"", "bytes */%s" % total)


# ---- simple & multipart --------------------------------------------------------

def test_media_upload(emulator):
    data = blob(300 * KIB)
    r = emulator.request("POST", "/upload/drive/v3/files", body=data,
                         headers={"Content-Type": "image/png"},
                         params={"uploadType": "media", "fields": "*"})
    f = r.json()
    assert r.status == 200 and f["name"] == "Untitled" and f["mimeType"] == "image/png"
    assert f["size"] == str(len(data)) and f["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert emulator.download(f["id"]) == data


def test_multipart_upload_and_update(emulator):
    d = emulator.create_folder("d")
    f = emulator.upload("m.txt", b"first", d["id"], metadata={"mimeType": "text/plain",
                                                               "modifiedTime": "2021-01-01T00:00:00.000Z"})
    assert f["parents"] == [d["id"]] and f["mimeType"] == "text/plain"
    assert f["modifiedTime"] == "2021-01-01T00:00:00.000Z"
    boundary = "xyz"
    body = (b"--xyz\r\nContent-Type: application/json\r\n\r\n{\"name\":\"m2.txt\"}\r\n"
            b"--xyz\r\nContent-Type: text/plain\r\n\r\nsecond version\r\n--xyz--")
    r = emulator.request("PATCH", "/upload/drive/v3/files/" + f["id"], body=body,
                         headers={"Content-Type": "multipart/related; boundary=" + boundary},
                         params={"uploadType": "multipart", "fields": "name,size,md5Checksum,version"})
    g = r.json()
    assert r.status == 200 and g["name"] == "m2.txt" and g["size"] == "14"
    assert int(g["version"]) > int(f["version"])
    assert emulator.download(f["id"]) == b"second version"


def test_multipart_rejects_parents_on_update_and_bad_bodies(emulator):
    f = emulator.upload("m.txt", b"x")
    body = (b"--b\r\nContent-Type: application/json\r\n\r\n{\"parents\":[\"root\"]}\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\ny\r\n--b--")
    r = emulator.request("PATCH", "/upload/drive/v3/files/" + f["id"], body=body,
                         headers={"Content-Type": "multipart/related; boundary=b"},
                         params={"uploadType": "multipart"})
    assert r.status == 403
    r = emulator.request("POST", "/upload/drive/v3/files", body=b"--b\r\nno end",
                         headers={"Content-Type": "multipart/related; boundary=b"},
                         params={"uploadType": "multipart"})
    assert r.status == 400
    r = emulator.request("POST", "/upload/drive/v3/files", body=b"x", params={"uploadType": "bogus"})
    assert r.status == 400


def test_media_update_of_folder_is_refused(emulator):
    d = emulator.create_folder("d")
    r = emulator.request("PATCH", "/upload/drive/v3/files/" + d["id"], body=b"x",
                         params={"uploadType": "media"})
    assert r.status == 400


# ---- resumable -------------------------------------------------------------------

def test_resumable_upload_in_chunks(emulator):
    data = blob(2 * UNIT + 1000)
    total = len(data)
    loc = start_session(emulator, {"name": "big.bin", "parents": ["root"]}, total)
    r = status_query(emulator, loc, total)
    assert r.status == 308 and "Range" not in r.headers  # nothing received yet
    r = put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, total))
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (UNIT - 1)
    r = put(emulator, loc, data[UNIT:2 * UNIT], "bytes %d-%d/%d" % (UNIT, 2 * UNIT - 1, total),
            method="POST")  # rclone sends chunks with POST
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (2 * UNIT - 1)
    r = status_query(emulator, loc, total)
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (2 * UNIT - 1)
    r = put(emulator, loc, data[2 * UNIT:], "bytes %d-%d/%d" % (2 * UNIT, total - 1, total))
    assert r.status == 201
    f = r.json()
    assert f["size"] == str(total) and f["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert f["name"] == "big.bin"
    assert emulator.download(f["id"]) == data
    # A finished session answers with the file again.
    r = status_query(emulator, loc, total)
    assert r.status == 201 and r.json()["id"] == f["id"]
    kinds = emulator.stats()["requests"]
    assert kinds["upload_start"] == 1 and kinds["upload_chunk"] == 3 and kinds["upload_status"] == 3


def test_resumable_whole_file_without_content_range(emulator):
    data = blob(5000)
    loc = start_session(emulator, {"name": "one-shot"})
    r = put(emulator, loc, data)
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_resumable_non_final_chunk_must_be_256k_multiple(emulator):
    data = blob(UNIT + 100)
    loc = start_session(emulator, total=len(data))
    r = put(emulator, loc, data[:100000], "bytes 0-99999/%d" % len(data))
    assert r.status == 400 and "262144" in r.json()["error"]["message"]
    r = status_query(emulator, loc, len(data))
    assert r.status == 308 and "Range" not in r.headers  # nothing stored
    r = put(emulator, loc, data[:UNIT], "bytes 0-%d/*" % (UNIT - 1))
    assert r.status == 308
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, len(data) - 1, len(data)))
    assert r.status == 201  # the final chunk may be any size


def test_resumable_unknown_total(emulator):
    data = blob(3 * UNIT)
    loc = start_session(emulator)
    r = put(emulator, loc, data[:UNIT], "bytes 0-%d/*" % (UNIT - 1))
    assert r.status == 308
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/*" % (UNIT, 3 * UNIT - 1))
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (3 * UNIT - 1)
    # All bytes sent while the length was unknown: a status query with the
    # total finishes the upload.
    r = status_query(emulator, loc, 3 * UNIT)
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_resumable_chunk_at_wrong_offset_is_not_stored(emulator):
    data = blob(3 * UNIT)
    total = len(data)
    loc = start_session(emulator, total=total)
    put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, total))
    r = put(emulator, loc, data[2 * UNIT:], "bytes %d-%d/%d" % (2 * UNIT, total - 1, total))
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (UNIT - 1)  # a gap: refused
    r = put(emulator, loc, blob(UNIT, 99), "bytes 0-%d/%d" % (UNIT - 1, total))
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (UNIT - 1)  # old bytes: ignored
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, total - 1, total))
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_resumable_mismatched_lengths(emulator):
    loc = start_session(emulator, total=2 * UNIT)
    r = put(emulator, loc, blob(10), "bytes 0-%d/%d" % (UNIT - 1, 2 * UNIT))
    assert r.status == 400
    r = put(emulator, loc, blob(UNIT), "bytes 0-%d/%d" % (UNIT - 1, 3 * UNIT))
    assert r.status == 400  # the total changed
    r = put(emulator, loc, blob(UNIT), "bytes=0-x")
    assert r.status == 400


def test_unknown_or_expired_session_is_404(emulator):
    r = put(emulator, emulator.url + "/upload/drive/v3/files?uploadType=resumable&upload_id=nope",
            b"x", "bytes 0-0/1")
    assert r.status == 404
    loc = start_session(emulator, total=10)
    emulator.control("POST", "/_emu/expire-sessions")
    assert put(emulator, loc, blob(10), "bytes 0-9/10").status == 404


def test_resumable_update_replaces_content(emulator):
    f = emulator.upload("u.bin", b"old")
    data = blob(UNIT + 7)
    loc = start_session(emulator, {"name": "u2.bin"}, len(data), file_id=f["id"])
    assert put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, len(data))).status == 308
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, len(data) - 1, len(data)))
    assert r.status == 200  # update, not create
    g = r.json()
    assert g["id"] == f["id"] and g["name"] == "u2.bin"
    assert g["md5Checksum"] == hashlib.md5(data).hexdigest()
    entry = [x for x in emulator.versions()["files"] if x["id"] == f["id"]][0]
    assert len(entry["versions"]) == 2


def test_resumable_start_validates(emulator):
    r = emulator.request("PATCH", "/upload/drive/v3/files/1nope", json={},
                         params={"uploadType": "resumable"})
    assert r.status == 404
    r = emulator.request("POST", "/upload/drive/v3/files", json={"parents": ["1nope"]},
                         params={"uploadType": "resumable"})
    assert r.status == 404
    f = emulator.upload("f", b"x")
    r = emulator.request("PATCH", "/upload/drive/v3/files/" + f["id"], json={"parents": ["root"]},
                         params={"uploadType": "resumable"})
    assert r.status == 403


def test_resumable_client_id_in_use_is_409(emulator):
    ids = emulator.request("GET", "/drive/v3/files/generateIds", params={"count": 1}).json()["ids"]
    loc = start_session(emulator, {"name": "a", "id": ids[0]}, 3)
    emulator.request("POST", "/drive/v3/files", json={"name": "b", "id": ids[0]})
    r = put(emulator, loc, b"abc", "bytes 0-2/3")
    assert r.status == 409


def _chunk_over_raw_connection(emu, loc, data, content_range):
    """Send a chunk on its own connection; return the response or the
    exception the client saw (the emulator may reset the connection)."""
    parts = urllib.parse.urlsplit(loc)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("PUT", parts.path + "?" + parts.query, body=data,
                     headers={"Content-Range": content_range})
        r = conn.getresponse()
        return r.status, r.read()
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        return None, e
    finally:
        conn.close()


def test_resumable_resumes_after_a_reset_mid_chunk(emulator):
    data = blob(4 * UNIT + 123)
    total = len(data)
    loc = start_session(emulator, total=total)
    # The connection breaks after 600 KiB of a 1 MiB chunk arrived.
    emulator.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 1, "bytes": 600 * KIB}]})
    status, _ = _chunk_over_raw_connection(emulator, loc, data[:4 * UNIT],
                                           "bytes 0-%d/%d" % (4 * UNIT - 1, total))
    assert status is None
    # Drive keeps what arrived in whole 256 KiB units.
    r = status_query(emulator, loc, total)
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (2 * UNIT - 1)
    r = put(emulator, loc, data[2 * UNIT:], "bytes %d-%d/%d" % (2 * UNIT, total - 1, total))
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert emulator.download(r.json()["id"]) == data
    assert emulator.stats()["faults_injected"] == 1


def test_resumable_resend_of_a_partly_stored_chunk(emulator):
    """rclone re-sends the same chunk after a reset: the overlap is skipped."""
    data = blob(4 * UNIT)
    loc = start_session(emulator, total=len(data))
    emulator.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 1, "bytes": 300 * KIB}]})
    cr = "bytes 0-%d/%d" % (len(data) - 1, len(data))
    assert _chunk_over_raw_connection(emulator, loc, data, cr)[0] is None
    r = put(emulator, loc, data, cr)
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_resumable_resumes_after_an_error_and_status_query(emulator):
    data = blob(2 * UNIT)
    total = len(data)
    loc = start_session(emulator, total=total)
    emulator.set_faults({"fail_nth": [{"kind": "upload_chunk", "n": 2, "status": 503}]})
    assert put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, total)).status == 308
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, total - 1, total))
    assert r.status == 503 and r.json()["error"]["errors"][0]["reason"] == "backendError"
    r = status_query(emulator, loc, total)
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (UNIT - 1)
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, total - 1, total))
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_resumable_lost_final_response(emulator):
    data = blob(UNIT + 5)
    total = len(data)
    loc = start_session(emulator, total=total)
    assert put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, total)).status == 308
    emulator.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 1, "side": "response"}]})
    status, _ = _chunk_over_raw_connection(emulator, loc, data[UNIT:],
                                           "bytes %d-%d/%d" % (UNIT, total - 1, total))
    assert status is None
    r = status_query(emulator, loc, total)
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert len([f for f in emulator.files() if not f["deleted"]]) == 1  # created once


def test_resumable_session_survives_restart(emulator):
    data = blob(2 * UNIT + 10)
    total = len(data)
    loc = start_session(emulator, total=total)
    assert put(emulator, loc, data[:UNIT], "bytes 0-%d/%d" % (UNIT - 1, total)).status == 308
    emulator.restart()
    r = status_query(emulator, loc, total)
    assert r.status == 308 and r.headers["Range"] == "bytes=0-%d" % (UNIT - 1)
    r = put(emulator, loc, data[UNIT:], "bytes %d-%d/%d" % (UNIT, total - 1, total))
    assert r.status == 201 and r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()


def test_cancel_session(emulator):
    loc = start_session(emulator, total=10)
    r = emulator.request("DELETE", loc, token=False)
    assert r.status == 499
    assert status_query(emulator, loc, 10).status == 404


def test_large_upload_streams_to_disk(emulator):
    """A 64 MiB upload must not be held in memory by the emulator."""
    data = os.urandom(1 << 20) * 64
    r = emulator.request("POST", "/upload/drive/v3/files", body=data,
                         headers={"Content-Type": "application/octet-stream"},
                         params={"uploadType": "media", "fields": "id,md5Checksum"})
    assert r.json()["md5Checksum"] == hashlib.md5(data).hexdigest()
    with open("/proc/%d/status" % emulator.proc.pid) as f:
        rss_kb = int([l for l in f if l.startswith("VmHWM")][0].split()[1])
    assert rss_kb < 60 * 1024, "emulator peak RSS %d KiB" % rss_kb
    got = emulator.request("GET", "/drive/v3/files/%s?alt=media" % r.json()["id"],
                           headers={"Range": "bytes=%d-%d" % (50 << 20, (50 << 20) + 99)})
    assert got.status == 206 and got.body == data[50 << 20:(50 << 20) + 100]
