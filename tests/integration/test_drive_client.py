"""test_drive_client.py — vectur's Drive client (drive/*.c) end to end
against the Drive emulator, through bin/tools/drivectl.

Each test works in a folder of its own and starts with cleared faults and
statistics, so request counts read from the emulator's /_emu/stats are the
test's own. Binaries come from $VECTUR_BIN (default <repo>/bin)."""

import concurrent.futures
import hashlib
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
DRIVECTL = os.path.join(BIN, "tools", "drivectl")
FOLDER_MIME = "application/vnd.google-apps.folder"
FW_SLASH = "\uff0f"
FW_STOP = "\uff0e"
QUOTE = "\u201b"

# An access token that expired long ago: every run starts with a refresh.
EXPIRED_TOKEN = {
    "access_token": "expired-access-token",
    "token_type": "Bearer",
    "refresh_token": "test-refresh-token",
    "expiry": "2020-01-01T00:00:00Z",
}


def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_random(path, size, seed=0):
    """Deterministic pseudo-random content, fast (no os.urandom for MBs)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            piece = block[i % 97:] + block[:i % 97]
            f.write(piece[:left])
            left -= min(left, len(piece))
            i += 1
    return path


class EmuAPI:
    """Talks to the emulator directly (for setup only: creating thousands
    of files or duplicates faster than drivectl would)."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.token = None

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.conn()
        hdrs = dict(headers or {})
        if self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        if own:
            conn.close()
        if resp.status >= 300:
            raise RuntimeError("%s %s -> %d %s" % (method, path, resp.status, raw[:300]))
        return json.loads(raw) if raw else None

    def login(self):
        conn = self.conn()
        form = urllib.parse.urlencode({
            "grant_type": "refresh_token", "refresh_token": "test-refresh-token",
            "client_id": "test-client", "client_secret": "test-secret"})
        conn.request("POST", "/token", body=form,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        self.token = json.loads(resp.read())["access_token"]
        conn.close()

    def create(self, parent, name, mime="application/octet-stream", conn=None):
        return self.request("POST", "/drive/v3/files?fields=id,name,createdTime",
                            {"name": name, "parents": [parent], "mimeType": mime},
                            conn=conn)

    def create_many(self, parent, names, threads=8):
        """Creates metadata-only files over a few keep-alive connections."""
        chunks = [names[i::threads] for i in range(threads)]

        def work(part):
            c = self.conn()
            try:
                for n in part:
                    self.create(parent, n, conn=c)
            finally:
                c.close()
            return len(part)

        with concurrent.futures.ThreadPoolExecutor(threads) as ex:
            return sum(ex.map(work, chunks))


class Drive:
    """drivectl bound to one emulator, one config file and one folder."""

    def __init__(self, emulator, tmp_path):
        self.emu = emulator
        self.tmp = tmp_path
        self.conf = str(tmp_path / "rclone.conf")
        self.write_config()
        self.env = dict(os.environ, VECTUR_BACKOFF_BASE_MS="20")
        self.env.pop("RCLONE_CONFIG", None)
        self.dir = "t-" + uuid.uuid4().hex[:10]
        self.api = EmuAPI(emulator.url)

    def write_config(self):
        """A config whose token expired: the next run must refresh."""
        with open(self.conf, "w") as f:
            f.write("[emu]\ntype = drive\nscope = drive\n"
                    "client_id = test-client\nclient_secret = test-secret\n"
                    "token = %s\n" % json.dumps(EXPIRED_TOKEN))

    def argv(self, *args):
        return [DRIVECTL, "--config", self.conf, "--endpoint", self.emu.url,
                "emu:"] + [str(a) for a in args]

    def p(self, path=""):
        return self.dir + ("/" + path if path else "")

    def run(self, *args, check=True, timeout=120):
        r = subprocess.run(self.argv(*args), env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("drivectl %s failed (%d): %s" %
                                 (" ".join(map(str, args)), r.returncode, r.stderr))
        return r

    def json(self, *args):
        out = self.run(*args).stdout.strip()
        return json.loads(out.splitlines()[-1])

    def lines(self, *args):
        return [json.loads(l) for l in self.run(*args).stdout.splitlines() if l.strip()]

    def put(self, local, path, *opts):
        return self.json("put", local, self.p(path), *opts)

    def get(self, path, local, *opts):
        return self.json("get", self.p(path), local, *opts)

    def stat(self, path=""):
        return self.json("stat", self.p(path))

    def ls(self, path=""):
        return self.lines("ls", self.p(path))

    def mkdir(self, path=""):
        return self.json("mkdir", self.p(path))

    def requests(self, kind=None):
        st = self.emu.stats()["requests"]
        return st.get(kind, 0) if kind else st


@pytest.fixture
def drive(emulator, tmp_path):
    emulator.clear_faults()
    d = Drive(emulator, tmp_path)
    d.root = d.mkdir()
    d.api.login()
    emulator.reset_stats()
    yield d
    emulator.clear_faults()


def local_file(drive, name, size, seed=0):
    return write_random(str(drive.tmp / name), size, seed)


# ---- every call ---------------------------------------------------------

def test_about_reports_user_and_quota(drive):
    a = drive.json("about")
    assert "@" in a["user"]["email"]
    assert a["quota"]["limit"] != 0
    assert a["root"]


def test_expired_config_token_is_refreshed_before_the_first_call(drive):
    drive.write_config()
    drive.run("about")
    assert drive.requests("token") == 1
    assert drive.requests("about") == 1


def test_mkdir_creates_nested_folders_and_stat_finds_them(drive):
    f = drive.mkdir("a/b/c")
    assert f["is_folder"] and f["mime_type"] == FOLDER_MIME
    assert drive.stat("a/b/c")["id"] == f["id"]
    assert drive.stat("a/b")["id"] == f["parent"]
    again = drive.mkdir("a/b/c")
    assert again["id"] == f["id"], "mkdir of an existing path creates nothing"


def test_small_put_goes_multipart_and_gets_back_identical(drive):
    src = local_file(drive, "small.bin", 100_000)
    f = drive.put(src, "small.bin")
    assert f["size"] == 100_000 and f["md5"] == md5_file(src)
    assert drive.requests("upload_multipart") == 1
    assert drive.requests("upload_start") == 0
    out = str(drive.tmp / "small.out")
    g = drive.get("small.bin", out)
    assert g["bytes"] == 100_000 and md5_file(out) == md5_file(src)


def test_empty_file_uploads_and_downloads(drive):
    src = local_file(drive, "empty", 0)
    f = drive.put(src, "empty")
    assert f["size"] == 0 and f["md5"] == hashlib.md5(b"").hexdigest()
    out = str(drive.tmp / "empty.out")
    assert drive.get("empty", out)["bytes"] == 0
    assert os.path.getsize(out) == 0


def test_large_put_uses_resumable_chunks_of_the_asked_size(drive):
    size = 3 * 1024 * 1024 + 12345
    src = local_file(drive, "big.bin", size, seed=1)
    f = drive.put(src, "big.bin", "--chunk-size", "1M", "--multipart-max", "1M")
    assert f["md5"] == md5_file(src) and f["size"] == size
    assert drive.requests("upload_start") == 1
    assert drive.requests("upload_chunk") == 4
    out = str(drive.tmp / "big.out")
    drive.get("big.bin", out)
    assert md5_file(out) == md5_file(src)


def test_put_over_an_existing_file_replaces_its_content(drive):
    a = local_file(drive, "a", 5000, seed=1)
    b = local_file(drive, "b", 7000, seed=2)
    first = drive.put(a, "f.bin")
    second = drive.put(b, "f.bin")
    assert second["id"] == first["id"]
    assert second["md5"] == md5_file(b) and second["size"] == 7000
    assert second["version"] > first["version"]
    assert len([e for e in drive.ls() if e["name"] == "f.bin"]) == 1


def test_resumable_update_replaces_content(drive):
    a = local_file(drive, "a", 600_000, seed=1)
    b = local_file(drive, "b", 900_000, seed=2)
    first = drive.put(a, "r.bin")
    second = drive.put(b, "r.bin", "--chunk-size", "256K", "--multipart-max", "1")
    assert second["id"] == first["id"] and second["md5"] == md5_file(b)
    assert drive.requests("upload_start") == 1


def test_get_reads_a_byte_range(drive):
    src = local_file(drive, "r.bin", 1_000_000, seed=3)
    drive.put(src, "r.bin")
    out = str(drive.tmp / "part")
    g = drive.get("r.bin", out, "--offset", "123456", "--length", "1000")
    with open(src, "rb") as f:
        f.seek(123456)
        want = f.read(1000)
    assert g["bytes"] == 1000
    assert open(out, "rb").read() == want


def test_get_range_past_the_end_is_short_not_an_error(drive):
    src = local_file(drive, "r.bin", 1000, seed=3)
    drive.put(src, "r.bin")
    out = str(drive.tmp / "part")
    assert drive.get("r.bin", out, "--offset", "900", "--length", "500")["bytes"] == 100
    assert drive.get("r.bin", out, "--offset", "5000", "--length", "10")["bytes"] == 0


def test_mv_renames_and_moves_between_folders(drive):
    src = local_file(drive, "m", 10)
    f = drive.put(src, "x/one")
    dst = drive.mkdir("y")
    moved = drive.json("mv", drive.p("x/one"), drive.p("y/two"))
    assert moved["id"] == f["id"]
    assert moved["name"] == "two" and moved["parent"] == dst["id"]
    assert [e["name"] for e in drive.ls("x")] == []
    into = drive.json("mv", drive.p("y/two"), drive.p("x"))
    assert into["parent"] == drive.stat("x")["id"] and into["name"] == "two"
    assert drive.requests("update") == 2


def test_trash_hides_a_file_and_changes_report_it(drive):
    tok = drive.json("changes")["startPageToken"]
    src = local_file(drive, "t", 10)
    f = drive.put(src, "t")
    drive.run("trash", drive.p("t"))
    assert drive.ls() == []
    assert drive.run("stat", drive.p("t"), check=False).returncode != 0
    lines = drive.lines("changes", tok)
    changes = [l for l in lines if "file_id" in l and l["file_id"] == f["id"]]
    assert changes and changes[-1]["file"]["trashed"]
    assert lines[-1]["newStartPageToken"]


def test_rm_deletes_for_good_and_changes_say_removed(drive):
    src = local_file(drive, "d", 10)
    f = drive.put(src, "d")
    tok = drive.json("changes")["startPageToken"]
    drive.run("rm", drive.p("d"))
    r = drive.run("stat", drive.p("d"), check=False)
    assert r.returncode != 0 and "404" in r.stderr
    lines = drive.lines("changes", tok)
    assert any(l.get("file_id") == f["id"] and l["removed"] for l in lines)
    assert drive.requests("delete") == 1


def test_changes_feed_follows_pages_and_ends_with_a_new_token(drive):
    tok = drive.json("changes")["startPageToken"]
    ids = {drive.api.create(drive.root["id"], "c%d" % i)["id"] for i in range(25)}
    drive.emu.set_faults({"short_pages": True, "seed": 3})
    lines = drive.lines("changes", tok)
    seen = {l["file_id"] for l in lines if "file_id" in l}
    assert ids <= seen
    new = lines[-1]["newStartPageToken"]
    later = drive.lines("changes", new)[:-1]
    assert not ids & {l["file_id"] for l in later}


def test_team_drive_remote_works_inside_the_shared_drive(drive):
    td = drive.emu.request("GET", "/drive/v3/drives").json()["drives"][0]["id"]
    with open(drive.conf, "a") as f:
        f.write("team_drive = %s\n" % td)
    assert drive.json("about")["root"] == td
    tok = drive.json("changes")["startPageToken"]
    src = local_file(drive, "td", 300_000, seed=4)
    f = drive.put(src, "in-td.bin")
    folder = drive.stat()
    assert folder["parent"] == td and f["parent"] == folder["id"]
    assert [e["name"] for e in drive.ls()] == ["in-td.bin"]
    out = str(drive.tmp / "td.out")
    drive.get("in-td.bin", out)
    assert md5_file(out) == md5_file(src)
    assert f["id"] in {l.get("file_id") for l in drive.lines("changes", tok)}


def test_root_folder_id_makes_that_folder_the_root(drive):
    with open(drive.conf, "a") as f:
        f.write("root_folder_id = %s\n" % drive.root["id"])
    assert drive.json("about")["root"] == drive.root["id"]
    src = local_file(drive, "r", 10)
    f = drive.json("put", src, "top.bin")
    assert f["parent"] == drive.root["id"]


def test_stat_of_a_missing_path_fails_with_404(drive):
    r = drive.run("stat", drive.p("nope/deeper"), check=False)
    assert r.returncode == 1 and "404" in r.stderr


# ---- listings -----------------------------------------------------------

def test_listing_over_1000_entries_follows_next_page_tokens(drive):
    names = ["f%05d" % i for i in range(2500)]
    drive.api.create_many(drive.root["id"], names)
    drive.emu.reset_stats()
    got = sorted(e["name"] for e in drive.ls())
    assert got == names
    assert drive.requests("list") <= 3 + 1  # 3 pages (+1 for the path walk)


def test_listing_with_short_and_empty_pages_still_returns_everything(drive):
    names = ["s%04d" % i for i in range(1200)]
    drive.api.create_many(drive.root["id"], names)
    drive.emu.set_faults({"short_pages": True, "seed": 7})
    got = sorted(e["name"] for e in drive.ls())
    assert got == names


def test_listing_10000_entries_takes_at_most_11_list_requests(drive):
    names = ["e%05d" % i for i in range(10000)]
    t0 = time.time()
    drive.api.create_many(drive.root["id"], names, threads=8)
    setup = time.time() - t0
    drive.emu.reset_stats()
    entries = drive.ls()
    assert len(entries) == 10000
    # The walk to the folder costs list requests too; the folder's own
    # listing must be 10 pages of 1000.
    walk = drive.emu.stats()["requests"].get("list", 0) - 10
    assert walk <= 1, drive.requests()
    print("10k setup %.1fs" % setup)


# ---- names --------------------------------------------------------------

ODD_NAMES = [
    "it's",                      # quote: escaped in q
    "back\\slash",               # backslash: escaped first
    "both\\'mixed",              # backslash before quote
    "\"double\"",
    "caf\u00e9 \u65e5\u672c\u8a9e \U0001F600",  # unicode
    "  spaces  ",
    "UPPER",                    # case-insensitive name= must not match 'upper'
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_names_round_trip_put_stat_get(drive, name):
    src = local_file(drive, "src", 321, seed=len(name))
    f = drive.put(src, name)
    assert f["drive_name"] == name and f["name"] == name
    assert drive.stat(name)["id"] == f["id"]
    out = str(drive.tmp / "out")
    drive.get(name, out)
    assert md5_file(out) == md5_file(src)


def test_name_lookup_is_case_sensitive(drive):
    drive.api.create(drive.root["id"], "upper")
    up = drive.api.create(drive.root["id"], "UPPER")
    assert drive.stat("UPPER")["id"] == up["id"]
    assert drive.run("stat", drive.p("Upper"), check=False).returncode != 0


def test_slash_in_a_drive_name_shows_as_fullwidth_solidus(drive):
    f = drive.api.create(drive.root["id"], "a/b")
    lst = drive.ls()
    assert [e["name"] for e in lst] == ["a" + FW_SLASH + "b"]
    assert lst[0]["drive_name"] == "a/b"
    assert drive.stat("a" + FW_SLASH + "b")["id"] == f["id"]


def test_literal_fullwidth_solidus_is_quoted_and_kept_apart(drive):
    slash = drive.api.create(drive.root["id"], "x/y")
    full = drive.api.create(drive.root["id"], "x" + FW_SLASH + "y")
    names = sorted(e["name"] for e in drive.ls())
    assert names == sorted(["x" + FW_SLASH + "y", "x" + QUOTE + FW_SLASH + "y"])
    assert drive.stat("x" + FW_SLASH + "y")["id"] == slash["id"]
    assert drive.stat("x" + QUOTE + FW_SLASH + "y")["id"] == full["id"]


def test_dot_names_map_to_fullwidth_full_stops(drive):
    one = drive.api.create(drive.root["id"], ".")
    two = drive.api.create(drive.root["id"], "..")
    assert drive.stat(FW_STOP)["id"] == one["id"]
    assert drive.stat(FW_STOP + FW_STOP)["id"] == two["id"]


def test_put_with_a_slash_name_creates_one_file_not_a_folder(drive):
    src = local_file(drive, "s", 10)
    f = drive.put(src, "ab" + FW_SLASH + "cd")
    assert f["drive_name"] == "ab/cd"
    assert [e["drive_name"] for e in drive.ls()] == ["ab/cd"]


def test_duplicate_names_resolve_to_the_oldest(drive):
    first = drive.api.create(drive.root["id"], "dup")
    time.sleep(0.01)
    second = drive.api.create(drive.root["id"], "dup")
    assert first["id"] != second["id"]
    assert drive.stat("dup")["id"] == first["id"]
    assert sorted(e["id"] for e in drive.ls()) == sorted([first["id"], second["id"]])


def test_a_file_just_created_is_found_despite_lagging_name_queries(drive):
    drive.emu.set_faults({"name_query_delay": 30000})
    f = drive.api.create(drive.root["id"], "fresh")
    assert drive.stat("fresh")["id"] == f["id"]


# ---- resumable uploads under faults -------------------------------------

def test_resumable_upload_survives_a_connection_reset(drive):
    size = 5 * 1024 * 1024 + 777
    src = local_file(drive, "big", size, seed=5)
    # Two resets in a row: curl itself resends once on a connection it
    # reused, so the second reset is the one our resume logic must handle.
    drive.emu.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 2},
                                        {"kind": "upload_chunk", "n": 3}]})
    f = drive.put(src, "big", "--chunk-size", "1M", "--multipart-max", "1M")
    assert f["md5"] == md5_file(src) and f["size"] == size
    assert drive.requests("upload_status") >= 1, "asked Drive where to resume"
    assert drive.requests("upload_start") == 1, "resumed, not restarted"


def test_resume_when_drive_kept_nothing_restarts_at_byte_zero(drive):
    # Resets after 1000 bytes of the first chunk: Drive keeps whole 256 KiB
    # units only, so its 308 has no Range header at all.
    size = 1024 * 1024
    src = local_file(drive, "big", size, seed=12)
    drive.emu.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 1, "bytes": 1000},
                                        {"kind": "upload_chunk", "n": 2, "bytes": 1000}]})
    f = drive.put(src, "big", "--chunk-size", "512K", "--multipart-max", "1")
    assert f["md5"] == md5_file(src)
    assert drive.requests("upload_status") >= 1
    assert drive.requests("upload_start") == 1


def test_resumed_upload_of_a_changed_file_fails_the_md5_check(drive):
    size = 4 * 1024 * 1024
    src = local_file(drive, "big", size, seed=13)
    sess = str(drive.tmp / "session")
    drive.emu.set_faults({"bandwidth": 2 * 1024 * 1024})
    proc = subprocess.Popen(drive.argv("put", src, drive.p("big"), "--chunk-size", "256K",
                                       "--multipart-max", "1", "--session-file", sess),
                            env=drive.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while drive.requests("upload_chunk") < 3 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    drive.emu.clear_faults()
    with open(src, "r+b") as f:  # the part Drive already has changes locally
        f.write(b"changed!")
    r = drive.run("put", src, drive.p("big"), "--chunk-size", "256K",
                  "--multipart-max", "1", "--session-file", sess, check=False)
    assert r.returncode == 1 and "md5Mismatch" in r.stderr


def test_transfers_stream_instead_of_buffering_the_file(drive):
    size = 96 * 1024 * 1024
    src = local_file(drive, "big", size, seed=14)
    out = str(drive.tmp / "out")
    rss = []
    for args in (["put", src, drive.p("big")], ["get", drive.p("big"), out]):
        r = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M"] + drive.argv(*args),
                           env=drive.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        rss.append(int(r.stderr.strip().splitlines()[-1].split("=")[1]))  # KiB
    assert md5_file(out) == md5_file(src)
    limit = 64 * 1024 if "san" not in BIN else 160 * 1024
    assert max(rss) < limit, "max RSS %s KiB for a %d MiB file" % (rss, size >> 20)


@pytest.mark.parametrize("status,reason", [(500, "backendError"), (503, "backendError")])
def test_resumable_upload_resumes_after_a_server_error(drive, status, reason):
    size = 3 * 1024 * 1024
    src = local_file(drive, "big", size, seed=6)
    drive.emu.set_faults({"fail_nth": [{"kind": "upload_chunk", "n": 2,
                                        "status": status, "reason": reason}]})
    f = drive.put(src, "big", "--chunk-size", "1M", "--multipart-max", "1M")
    assert f["md5"] == md5_file(src)
    assert drive.requests("upload_start") == 1
    assert drive.requests("upload_status") >= 1


def test_expired_session_starts_a_new_one(drive):
    size = 2 * 1024 * 1024
    src = local_file(drive, "big", size, seed=7)
    drive.emu.set_faults({"fail_nth": [{"kind": "upload_chunk", "n": 2,
                                        "status": 404, "reason": "notFound"}]})
    f = drive.put(src, "big", "--chunk-size", "512K", "--multipart-max", "1")
    assert f["md5"] == md5_file(src)
    assert drive.requests("upload_start") == 2


def test_killed_upload_resumes_from_the_persisted_session(drive):
    size = 8 * 1024 * 1024
    src = local_file(drive, "big", size, seed=8)
    sess = str(drive.tmp / "session")
    drive.emu.set_faults({"bandwidth": 2 * 1024 * 1024})  # ~4 s for it all
    proc = subprocess.Popen(drive.argv("put", src, drive.p("big"), "--chunk-size", "512K",
                                       "--multipart-max", "1", "--session-file", sess),
                            env=drive.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(sess) and drive.requests("upload_chunk") >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("upload never got going")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert os.path.exists(sess), "the session URL was persisted"
    drive.emu.clear_faults()
    before = drive.emu.stats()["bytes_in"]
    f = drive.put(src, "big", "--chunk-size", "512K", "--multipart-max", "1",
                  "--session-file", sess)
    assert f["md5"] == md5_file(src) and f["size"] == size
    assert drive.requests("upload_start") == 1, "the second run reused the session"
    assert drive.emu.stats()["bytes_in"] - before < size, "did not start from zero"
    assert not os.path.exists(sess), "a finished upload forgets its session"


def test_upload_session_from_another_run_that_expired_starts_over(drive):
    src = local_file(drive, "big", 1024 * 1024, seed=9)
    sess = drive.tmp / "session"
    sess.write_text(drive.emu.url + "/upload/drive/v3/files?uploadType=resumable"
                    "&upload_id=doesnotexist\n")
    f = drive.put(src, "big", "--chunk-size", "256K", "--multipart-max", "1",
                  "--session-file", str(sess))
    assert f["md5"] == md5_file(src)
    assert drive.requests("upload_start") == 1


# ---- downloads under faults ---------------------------------------------

def test_download_resumes_after_a_reset_mid_body(drive):
    size = 4 * 1024 * 1024
    src = local_file(drive, "big", size, seed=10)
    drive.put(src, "big")
    drive.emu.reset_stats()
    drive.emu.set_faults({"reset_nth": [{"kind": "download", "n": 1, "fraction": 0.5}]})
    out = str(drive.tmp / "out")
    g = drive.get("big", out)
    assert g["bytes"] == size and md5_file(out) == md5_file(src)
    assert drive.requests("download") == 2
    # The second request asked only for what was missing.
    assert drive.emu.stats()["bytes_out"] < size * 1.6


# ---- one client, many threads ---------------------------------------------

def test_threads_share_one_client_and_refresh_the_token_once(drive):
    for i in range(5):
        drive.api.create(drive.root["id"], "f%d" % i)
    drive.write_config()  # every thread starts needing a fresh token
    r = drive.run("--stats", "parallel", "8", "ls", drive.p())
    names = [json.loads(l)["name"] for l in r.stdout.splitlines()]
    assert sorted(names) == sorted(["f%d" % i for i in range(5)] * 8)
    assert drive.requests("token") == 1


def test_threads_upload_and_download_at_once(drive):
    size = 3 * 1024 * 1024 + 5
    src = local_file(drive, "src", size, seed=11)
    drive.run("parallel", "6", "put", src, drive.p("same"), "--chunk-size", "256K",
              "--multipart-max", "1")
    files = drive.ls()
    assert len(files) == 6, "Drive allows duplicates: one file per thread"
    assert {f["md5"] for f in files} == {md5_file(src)}
    out = str(drive.tmp / "out")
    drive.run("parallel", "6", "get", drive.p("same"), out)
    assert md5_file(out) == md5_file(src)


# ---- retries ------------------------------------------------------------

RETRIED = [(500, "backendError"), (502, "backendError"), (503, "backendError"),
           (504, "backendError"), (429, "rateLimitExceeded"),
           (403, "userRateLimitExceeded"), (403, "rateLimitExceeded"),
           (408, "requestTimeout")]


@pytest.mark.parametrize("status,reason", RETRIED)
def test_transient_errors_are_retried_and_succeed(drive, status, reason):
    drive.api.create(drive.root["id"], "x")
    drive.emu.set_faults({"fail_nth": [
        {"kind": "list", "n": 1, "status": status, "reason": reason},
        {"kind": "list", "n": 2, "status": status, "reason": reason}]})
    r = drive.run("--stats", "ls", drive.p())
    assert [json.loads(l)["name"] for l in r.stdout.splitlines()] == ["x"]
    stats = json.loads(r.stderr.strip().splitlines()[-1])
    assert stats["retries"] >= 2


PERMANENT = [(404, "notFound"), (403, "insufficientFilePermissions"),
             (403, "storageQuotaExceeded"), (400, "invalid")]


@pytest.mark.parametrize("status,reason", PERMANENT)
def test_permanent_errors_are_not_retried(drive, status, reason):
    src = local_file(drive, "p", 100)
    drive.emu.set_faults({"fail_kinds": ["upload_multipart"], "fail_rate": 1.0,
                          "fail_status": status, "fail_reason": reason})
    r = drive.run("put", src, drive.p("p"), check=False)
    assert r.returncode == 1
    assert str(status) in r.stderr and reason in r.stderr
    assert drive.requests("upload_multipart") == 1


def test_retries_give_up_after_max_retries(drive):
    drive.emu.set_faults({"fail_kinds": ["about"], "fail_rate": 1.0, "fail_status": 503})
    r = drive.run("--max-retries", "3", "about", check=False)
    assert r.returncode == 1 and "503" in r.stderr
    assert drive.requests("about") == 4


def test_transport_resets_on_metadata_calls_are_retried(drive):
    drive.api.create(drive.root["id"], "x")
    drive.emu.set_faults({"reset_nth": [{"kind": "list", "n": 1}]})
    assert [e["name"] for e in drive.ls()] == ["x"]


def test_a_stalled_server_times_out_instead_of_hanging(drive):
    drive.emu.set_faults({"latency_ms": 3000})
    t0 = time.time()
    r = drive.run("--timeout", "1", "--max-retries", "1", "about", check=False)
    elapsed = time.time() - t0
    assert r.returncode == 1 and "Timeout" in r.stderr, r.stderr
    assert elapsed < 5.5, "two attempts of ~1 s each, not two of 3 s"


def test_401_after_token_expiry_refreshes_once_and_succeeds(drive):
    # The first run refreshes the expired config token and writes it back.
    drive.run("about")
    assert "expired-access-token" not in open(drive.conf).read()
    drive.emu.reset_stats()
    drive.run("about")
    assert drive.requests("token") == 0, "the saved token was reused"
    baseline = drive.emu.stats()["total"]
    # Now the server forgets every token: the next call gets a 401.
    drive.emu.expire_tokens()
    drive.emu.reset_stats()
    r = drive.run("--stats", "about")
    assert drive.requests("token") == 1
    # One refused request, one refresh, and the same request again.
    assert drive.emu.stats()["total"] == baseline + 2
    assert json.loads(r.stderr.strip().splitlines()[-1])["retries"] == 1


def test_a_second_401_is_an_error_not_a_loop(drive):
    drive.emu.set_faults({"fail_kinds": ["about"], "fail_rate": 1.0,
                          "fail_status": 401, "fail_reason": "authError"})
    r = drive.run("about", check=False)
    assert r.returncode == 1 and "401" in r.stderr
    assert drive.requests("about") == 2


def test_pacer_holds_the_request_rate(drive):
    for i in range(3):
        drive.api.create(drive.root["id"], "p%d" % i)
    t0 = time.time()
    r = drive.run("--stats", "--pacer-rate", "4", "--pacer-burst", "1",
                  "stat", drive.p("p2"))
    elapsed = time.time() - t0
    n = json.loads(r.stderr.strip().splitlines()[-1])["requests"]
    assert n >= 4
    assert elapsed >= (n - 1) / 4.0 - 0.1


def test_rate_limit_answers_slow_everyone_down(drive):
    drive.api.create(drive.root["id"], "x")
    drive.emu.set_faults({"fail_nth": [
        {"kind": "list", "n": 1, "status": 429, "reason": "rateLimitExceeded"}]})
    t0 = time.time()
    drive.ls()
    assert time.time() - t0 >= 0.02  # at least one backoff step (base 20 ms)



# ---- creates with generated ids never duplicate ---------------------------

def count_named(drive, name):
    return sum(1 for e in drive.ls() if e["name"] == name)


def test_generate_ids_returns_distinct_ids(drive):
    ids = drive.run("gen-ids", "5").stdout.split()
    assert len(ids) == 5 and len(set(ids)) == 5


def test_create_whose_answer_is_lost_is_not_duplicated(drive):
    # Drive stores the file, then the connection breaks before the answer:
    # the client's retry gets 409 fileIdInUse and must take that file
    # instead of making a second one with the same name.
    new_id = drive.run("gen-ids", "1").stdout.strip()
    src = local_file(drive, "lost.bin", 50_000, seed=7)
    drive.emu.set_faults({"reset_nth": [{"kind": "upload_multipart", "n": 1,
                                         "side": "response"}]})
    f = drive.put(src, "lost.bin", "--new-id", new_id)
    assert f["id"] == new_id and f["md5"] == md5_file(src)
    assert drive.requests("upload_multipart") == 2
    assert count_named(drive, "lost.bin") == 1


def test_resumable_create_whose_answer_is_lost_is_not_duplicated(drive):
    new_id = drive.run("gen-ids", "1").stdout.strip()
    size = 2 * 1024 * 1024 + 1
    src = local_file(drive, "lostbig.bin", size, seed=8)
    drive.emu.set_faults({"reset_nth": [{"kind": "upload_chunk", "n": 2,
                                         "side": "response"}]})
    f = drive.put(src, "lostbig.bin", "--new-id", new_id, "--chunk-size",
                  "1M", "--multipart-max", "1M")
    assert f["id"] == new_id and f["md5"] == md5_file(src)
    assert count_named(drive, "lostbig.bin") == 1
