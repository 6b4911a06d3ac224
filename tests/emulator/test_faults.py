"""test_faults.py — the emulator's fault injection and accounting: error
rates with Drive's reasons, n-th request failures, mixed statuses,
connection resets mid-body (request and response side), latency,
bandwidth caps, the name-query visibility delay, modifiedTime kept on an
appProperties-only update, options given at start,
and the stats endpoint. Faults must never touch /_emu/*."""

import http.client
import time

import pytest

from test_emulator import error_reason


def test_fail_rate_on_selected_kinds(emulator):
    emulator.upload("f", b"x")
    emulator.set_faults({"fail_rate": 1.0, "fail_status": 503, "fail_kinds": ["list"]})
    r = emulator.request("GET", "/drive/v3/files")
    assert r.status == 503
    err = r.json()["error"]
    assert err["code"] == 503 and err["errors"][0]["reason"] == "backendError"
    assert emulator.request("GET", "/drive/v3/files/root").status == 200  # a get: untouched
    assert emulator.stats()["faults_injected"] == 1
    assert emulator.control("GET", "/_emu/faults")["fail_kinds"] == ["list"]
    emulator.clear_faults()
    assert emulator.control("GET", "/_emu/faults") == {}
    assert emulator.request("GET", "/drive/v3/files").status == 200


def test_fail_rate_is_a_probability(emulator):
    emulator.set_faults({"fail_rate": 0.5, "seed": 7})
    statuses = [emulator.request("GET", "/drive/v3/files/root").status for _ in range(60)]
    assert 10 < statuses.count(500) < 50 and statuses.count(200) + statuses.count(500) == 60


@pytest.mark.parametrize("status,reason,message,domain", [
    (403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits"),
    (403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
    (429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits"),
    (500, "backendError", "Backend Error", "global"),
])
def test_rate_limit_errors_look_like_drive(emulator, status, reason, message, domain):
    emulator.set_faults({"fail_rate": 1.0, "fail_status": status, "fail_reason": reason})
    r = emulator.request("GET", "/drive/v3/files")
    assert r.status == status
    err = r.json()["error"]
    assert err["errors"][0] == {"domain": domain, "reason": reason, "message": message}
    assert err["message"] == message and err["code"] == status


def test_fail_nth_fails_once(emulator):
    emulator.upload("before", b"x")  # counted before the faults were set: ignored
    emulator.set_faults({"fail_nth": [{"kind": "create", "n": 3, "status": 503,
                                       "reason": "backendError"}]})
    statuses = [emulator.request("POST", "/drive/v3/files", json={"name": "f%d" % i}).status
                for i in range(5)]
    assert statuses == [200, 200, 503, 200, 200]
    assert len(emulator.list_all()) == 1 + 4  # the failed create did not happen


def test_mix_status(emulator):
    emulator.set_faults({"fail_rate": 1.0, "seed": 1,
                         "mix_status": [[500, "backendError"], [429, "rateLimitExceeded"],
                                        [403, "userRateLimitExceeded"]]})
    seen = set()
    for _ in range(30):
        r = emulator.request("GET", "/drive/v3/files")
        seen.add((r.status, error_reason(r)))
    assert seen == {(500, "backendError"), (429, "rateLimitExceeded"),
                    (403, "userRateLimitExceeded")}


def test_bad_fault_config_is_rejected(emulator):
    for bad in ({"fail_rate": "x"}, {"nonsense": 1}, {"fail_kinds": ["nope"]},
                {"fail_nth": [{"kind": "list"}]}):
        with pytest.raises(Exception):
            emulator.set_faults(bad)


def test_faults_never_apply_to_control_endpoints(emulator):
    emulator.set_faults({"fail_rate": 1.0, "reset_rate": 1.0, "latency_ms": 500})
    t0 = time.monotonic()
    for _ in range(5):
        emulator.stats()
        emulator.versions()
    assert time.monotonic() - t0 < 1.0


def _get_raw(emu, path, headers=None):
    """GET on a fresh connection; (status, body) or (None, exception)."""
    token = emu._token or emu.access_token()
    conn = emu.connection(timeout=10)
    h = {"Authorization": "Bearer " + token}
    h.update(headers or {})
    try:
        conn.request("GET", path, headers=h)
        r = conn.getresponse()
        return r.status, r.read()
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        return None, e
    finally:
        conn.close()


def test_reset_mid_response_body(emulator):
    data = bytes(range(256)) * 4096  # 1 MiB
    f = emulator.upload("r.bin", data)
    emulator.set_faults({"reset_nth": [{"kind": "download", "n": 1, "fraction": 0.5}]})
    status, err = _get_raw(emulator, "/drive/v3/files/%s?alt=media" % f["id"])
    assert status is None and isinstance(err, (http.client.IncompleteRead, ConnectionError))
    status, body = _get_raw(emulator, "/drive/v3/files/%s?alt=media" % f["id"])
    assert status == 200 and body == data


def test_reset_mid_request_body_loses_the_request(emulator):
    emulator.set_faults({"reset_nth": [{"kind": "upload_media", "n": 1, "bytes": 1000}]})
    token = emulator.access_token()
    conn = emulator.connection(timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("POST", "/upload/drive/v3/files?uploadType=media", body=b"x" * 200000,
                     headers={"Authorization": "Bearer " + token})
        conn.getresponse().read()
    conn.close()
    assert emulator.list_all() == []


def test_reset_rate_on_json_responses(emulator):
    emulator.set_faults({"reset_rate": 1.0, "fail_kinds": ["get"]})
    status, err = _get_raw(emulator, "/drive/v3/files/root")
    assert status is None
    assert _get_raw(emulator, "/drive/v3/files?fields=files(id)")[0] == 200
    assert emulator.stats()["faults_injected"] == 1


def test_reset_of_a_response_after_the_work_was_done(emulator):
    """A create whose response is lost still happened (a client retrying
    blindly makes a duplicate, as on Drive)."""
    emulator.set_faults({"reset_nth": [{"kind": "create", "n": 1, "side": "response"}]})
    token = emulator.access_token()
    conn = emulator.connection(timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("POST", "/drive/v3/files", body=b'{"name":"x"}',
                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        conn.getresponse().read()
    assert [f["name"] for f in emulator.list_all()] == ["x"]


def test_latency(emulator):
    emulator.set_faults({"latency_ms": 300})
    t0 = time.monotonic()
    assert emulator.request("GET", "/drive/v3/files/root").status == 200
    assert time.monotonic() - t0 >= 0.3


def test_bandwidth_cap_both_directions(emulator):
    data = b"b" * 400000
    emulator.set_faults({"bandwidth": 1000000})
    t0 = time.monotonic()
    f = emulator.upload("bw", data)
    up = time.monotonic() - t0
    t0 = time.monotonic()
    assert emulator.download(f["id"]) == data
    down = time.monotonic() - t0
    assert 0.3 < up < 4.0 and 0.3 < down < 4.0, (up, down)
    emulator.clear_faults()
    t0 = time.monotonic()
    emulator.download(f["id"])
    assert time.monotonic() - t0 < 0.3


def test_name_query_delay(emulator):
    d = emulator.create_folder("d")
    emulator.set_faults({"name_query_delay": 1.5})
    f = emulator.upload("lock", b"x", d["id"])
    by_name = "name = 'lock' and '%s' in parents" % d["id"]
    assert emulator.list_all(by_name) == []
    assert emulator.list_all("name contains 'lo'") == []
    # Listing by parent and get by id are consistent at once.
    assert [x["id"] for x in emulator.list_all("'%s' in parents" % d["id"])] == [f["id"]]
    assert emulator.get(f["id"], "id")["id"] == f["id"]
    time.sleep(1.55)
    assert [x["id"] for x in emulator.list_all(by_name)] == [f["id"]]


def test_props_keep_modified(emulator):
    f = emulator.upload("lock", b"x")
    before = emulator.get(f["id"], "modifiedTime")["modifiedTime"]

    def patch(body):
        r = emulator.request("PATCH", "/drive/v3/files/%s?fields=modifiedTime" % f["id"], json=body)
        assert r.status == 200, r.body
        return r.json()["modifiedTime"]

    emulator.set_faults({"props_keep_modified": True})
    time.sleep(0.01)
    assert patch({"appProperties": {"t": "1"}}) == before
    # Anything else still moves it, and an explicit modifiedTime is taken.
    moved = patch({"description": "d"})
    assert moved > before
    assert patch({"modifiedTime": "2030-01-02T03:04:05.678Z"}) == "2030-01-02T03:04:05.678Z"
    emulator.clear_faults()
    time.sleep(0.01)
    assert patch({"appProperties": {"t": "2"}}) > moved


def test_token_expiry_mid_session(emulator):
    emulator.access_token()
    f = emulator.upload("f", b"x")
    emulator.expire_tokens()
    r = emulator.request("GET", "/drive/v3/files/" + f["id"])
    assert r.status == 401 and error_reason(r) == "authError"
    emulator.access_token()
    assert emulator.request("GET", "/drive/v3/files/" + f["id"]).status == 200


def test_fault_options_at_start(emulator_factory):
    emu = emulator_factory(quiet=True, fail_rate=1.0, fail_status=429,
                           fail_reason="rateLimitExceeded", fail_kinds="about,list",
                           latency_ms=10, name_query_delay=0.5, bandwidth=50000000, seed=3)
    cfg = emu.control("GET", "/_emu/faults")
    assert cfg["fail_rate"] == 1.0 and cfg["fail_status"] == 429
    assert cfg["fail_kinds"] == ["about", "list"] and cfg["name_query_delay"] == 0.5
    r = emu.request("GET", "/drive/v3/files")
    assert r.status == 429 and error_reason(r) == "rateLimitExceeded"
    assert emu.request("GET", "/drive/v3/files/root").status == 200


def test_reset_rate_option_at_start(emulator_factory):
    emu = emulator_factory(quiet=True, reset_rate=1.0, fail_kinds="get")
    assert _get_raw(emu, "/drive/v3/files/root")[0] is None


def test_quota_exceeded(emulator):
    emulator.set_faults({"quota_bytes": 10})
    assert emulator.request("POST", "/upload/drive/v3/files?uploadType=media", body=b"12345").status == 200
    r = emulator.request("POST", "/upload/drive/v3/files?uploadType=media", body=b"123456")
    assert r.status == 403 and error_reason(r) == "storageQuotaExceeded"


def test_short_pages(emulator):
    for i in range(30):
        emulator.request("POST", "/drive/v3/files", json={"name": "f%d" % i})
    emulator.set_faults({"short_pages": True, "seed": 5})
    sizes, names, token = [], [], None
    while True:
        params = {"pageSize": 10, "fields": "nextPageToken,files(name)"}
        if token:
            params["pageToken"] = token
        page = emulator.request("GET", "/drive/v3/files", params=params).json()
        sizes.append(len(page["files"]))
        names += [f["name"] for f in page["files"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert sorted(names) == sorted("f%d" % i for i in range(30))
    assert any(s < 10 for s in sizes[:-1])


def test_stats_count_request_kinds(emulator):
    emulator.access_token()
    emulator.reset_stats()
    f = emulator.upload("a", b"abc")
    emulator.request("GET", "/drive/v3/files/" + f["id"])
    emulator.request("GET", "/drive/v3/files/%s?alt=media" % f["id"])
    emulator.request("GET", "/drive/v3/files")
    emulator.request("PATCH", "/drive/v3/files/" + f["id"], json={"name": "b"})
    emulator.request("PATCH", "/upload/drive/v3/files/%s?uploadType=media" % f["id"], body=b"new")
    emulator.request("POST", "/drive/v3/files/%s/copy" % f["id"], json={})
    emulator.request("GET", "/drive/v3/files/generateIds?count=2")
    emulator.request("GET", "/drive/v3/changes/startPageToken")
    emulator.request("GET", "/drive/v3/changes?pageToken=1")
    emulator.request("GET", "/drive/v3/about?fields=user")
    emulator.request("DELETE", "/drive/v3/files/" + f["id"])
    emulator.request("GET", "/nothing/here")
    emulator.request("POST", "/drive/v3/files", json={"name": "x"})
    s = emulator.stats()
    assert s["requests"] == {"upload_multipart": 1, "get": 1, "download": 1, "list": 1,
                             "update": 1, "update_media": 1, "copy": 1, "generate_ids": 1,
                             "changes_start": 1, "changes_list": 1, "about": 1, "delete": 1,
                             "other": 1, "create": 1}
    assert s["total"] == 14 and s["faults_injected"] == 0
    assert s["bytes_in"] > 6 and s["bytes_out"] > 3
    emulator.reset_stats()
    assert emulator.stats() == {"requests": {}, "total": 0, "bytes_in": 0, "bytes_out": 0,
                                "faults_injected": 0}


def test_request_side_reset_without_body_loses_the_request(emulator):
    f = emulator.upload("keep", b"x")
    emulator.set_faults({"reset_nth": [{"kind": "delete", "n": 1, "side": "request"}]})
    token = emulator.access_token()
    conn = emulator.connection(timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("DELETE", "/drive/v3/files/" + f["id"],
                     headers={"Authorization": "Bearer " + token})
        conn.getresponse().read()
    assert emulator.get(f["id"], "id")["id"] == f["id"]  # not deleted
