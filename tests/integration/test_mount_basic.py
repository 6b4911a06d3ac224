"""test_mount_basic.py — vectur-mount end to end against the Drive
emulator: the command line, the errors given before mounting, the overlay
of the user's code directory, and that what training code writes lands on
Drive intact and comes back after a remount with an empty cache.

Runs as root (FUSE mounts). Every test mounts its own Drive folder
(gdrive:t-<random>) on its own directory, with write_back=0.2 and
poll_interval=1 so that nothing waits for the defaults. Mounts run with -f
in a child process; teardown always runs `fusermount3 -u` and then kills
the child by PID. Binaries come from $VECTUR_BIN (default <repo>/bin)."""

import hashlib
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
VM = os.path.join(BIN, "vectur-mount")
FOLDER_MIME = "application/vnd.google-apps.folder"

TOKEN = {
    "access_token": "x",
    "token_type": "Bearer",
    "refresh_token": "test-refresh-token",
    "expiry": "2000-01-01T00:00:00Z",
}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="FUSE mounts need root here"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse"),
    pytest.mark.skipif(not os.access(VM, os.X_OK), reason="vectur-mount not built"),
]


def md5_bytes(b):
    return hashlib.md5(b).hexdigest()


def wait_for(pred, timeout=30, what="condition"):
    end = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def write_config(path, token=TOKEN):
    with open(path, "w") as f:
        f.write("[gdrive]\ntype = drive\nscope = drive\ntoken = %s\n" % json.dumps(token))
    return str(path)


# ---- the Drive side, read through the emulator's control endpoints ------

def emu_get(emu, path):
    with urllib.request.urlopen(emu.url + path, timeout=30) as r:
        return json.loads(r.read())


def emu_live_files(emu):
    return [f for f in emu_get(emu, "/_emu/files")["files"]
            if not f.get("trashed") and not f.get("deleted")]


def drive_lookup(emu, folder, relpath):
    """The live File at folder/relpath (by names from the emulator's root),
    or None."""
    files = emu_live_files(emu)
    cur = emu_get(emu, "/_emu/info")["root_id"]
    for name in [folder] + [p for p in relpath.split("/") if p]:
        hits = [f for f in files if f["name"] == name and cur in f.get("parents", [])]
        if not hits:
            return None
        cur = hits[0]["id"]
        found = hits[0]
    return found


def drive_bytes(emu, fid):
    vs = [f for f in emu_get(emu, "/_emu/versions")["files"] if f["id"] == fid][0]["versions"]
    with urllib.request.urlopen("%s/_emu/versions/%s/%d" % (emu.url, fid, len(vs) - 1),
                                timeout=60) as r:
        return r.read()


def wait_on_drive(emu, folder, relpath, content, timeout=30):
    """Waits until folder/relpath on Drive holds exactly `content`."""
    want = md5_bytes(content)

    def ok():
        f = drive_lookup(emu, folder, relpath)
        return f if f and f.get("md5Checksum") == want else None
    return wait_for(ok, timeout, "%s/%s with md5 %s on Drive" % (folder, relpath, want))


# ---- mounts ---------------------------------------------------------------

class Mount:
    """One vectur-mount -f child on its own directory and Drive folder."""

    def __init__(self, emu, tmp, folder=None, name="code", cache="cache"):
        self.emu = emu
        self.tmp = tmp
        self.conf = write_config(tmp / "rclone.conf")
        self.mnt = str(tmp / name)
        os.makedirs(self.mnt, exist_ok=True)
        self.cache = str(tmp / cache)
        self.folder = folder or "t-" + uuid.uuid4().hex[:10]
        self.proc = None
        self.log = str(tmp / ("mount-%s.log" % name))
        self.env = dict(os.environ)
        self.env.pop("RCLONE_CONFIG", None)

    def p(self, rel=""):
        return os.path.join(self.mnt, rel)

    def opts(self, cache=None, extra=""):
        o = "endpoint=%s,cache_dir=%s,write_back=0.2,poll_interval=1,drain_timeout=30" % (
            self.emu.url, cache or self.cache)
        return o + ("," + extra if extra else "")

    def argv(self, *args, cache=None, extra=""):
        return [VM, "--config", self.conf, "-o", self.opts(cache, extra)] + list(args)

    def start(self, cache=None, extra=""):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.argv("-f", "gdrive:" + self.folder, self.mnt, cache=cache, extra=extra),
            stdout=logf, stderr=logf, env=self.env)
        logf.close()

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("vectur-mount exited %d:\n%s" %
                                     (self.proc.returncode, open(self.log).read()))
            return os.path.ismount(self.mnt)
        wait_for(up, 30, "the mount")
        return self

    def stop(self, timeout=60):
        """Unmounts and waits for the process (which drains its queue)."""
        if self.proc is None:
            return None
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def cleanup(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True)

    def logtext(self):
        return open(self.log, errors="replace").read() if os.path.exists(self.log) else ""


@pytest.fixture
def mount(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    with open(m.p("train.py"), "w") as f:
        f.write("import os\nos.makedirs('runs/t', exist_ok=True)\n"
                "open('runs/t/out.txt', 'w').write('trained\\n')\nprint('local script ran')\n")
    yield m
    m.cleanup()


def run_argv(argv, timeout=60):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout)


def run_vm(*args, timeout=60):
    return run_argv([VM] + list(args), timeout=timeout)


# ---- command line -----------------------------------------------------------

def test_help_lists_every_option_from_the_table():
    r = run_vm("--help")
    assert r.returncode == 0
    for opt in ("cache_dir", "cache_max_size", "persist", "poll_interval", "lock_ttl",
                "write_back", "transfers", "chunk_size", "endpoint", "allow_other",
                "drain_timeout", "read_timeout", "use_trash", "--check", "--sync"):
        assert opt in r.stdout, opt
    assert "(default: 10G)" in r.stdout


def test_version_prints_a_version():
    r = run_vm("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("vectur-mount ")


def test_check_with_good_credentials_prints_account_and_quota(emulator, tmp_path):
    conf = write_config(tmp_path / "rclone.conf")
    r = run_vm("--check", "-o", "endpoint=" + emulator.url, "--config", conf, "gdrive:")
    assert r.returncode == 0, r.stderr
    assert "@" in r.stdout and "quota" in r.stdout
    assert "test-refresh-token" not in r.stdout + r.stderr


def test_check_with_bad_credentials_fails_without_printing_secrets(emulator, tmp_path):
    bad = dict(TOKEN, refresh_token="revoked-refresh-token-s3cret")
    conf = write_config(tmp_path / "rclone.conf", bad)
    r = run_vm("--check", "-o", "endpoint=" + emulator.url, "--config", conf, "gdrive:")
    assert r.returncode != 0
    assert r.stderr.strip()
    assert "s3cret" not in r.stdout + r.stderr


def test_check_exits_2_on_a_usage_error(emulator, tmp_path):
    conf = write_config(tmp_path / "rclone.conf")
    for args in ([], ["gdrive:", "gdrive:x"], ["-o", "cache_max_size=lots", "gdrive:"]):
        r = run_vm("--check", "-o", "endpoint=" + emulator.url, "--config", conf, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.strip()


def test_check_of_an_unknown_remote_names_it(emulator, tmp_path):
    conf = write_config(tmp_path / "rclone.conf")
    r = run_vm("--check", "-o", "endpoint=" + emulator.url, "--config", conf, "nosuch:")
    assert r.returncode != 0
    assert "nosuch" in r.stderr


# ---- errors before mounting -------------------------------------------------

def test_missing_mount_point_is_refused_before_mounting(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    r = run_argv(m.argv("gdrive:x", str(tmp_path / "nope")))
    assert r.returncode != 0
    assert "does not exist" in r.stderr


def test_mount_point_that_is_a_file_is_refused(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    f = tmp_path / "afile"
    f.write_text("x")
    r = run_argv(m.argv("gdrive:x", str(f)))
    assert r.returncode != 0
    assert "not a directory" in r.stderr


def test_mount_point_that_is_not_writable_is_refused(emulator):
    # Outside pytest's 0700 tmp dir, owned by root; the mount runs as nobody.
    d = tempfile.mkdtemp(prefix="vectur-ro-")
    try:
        os.chmod(d, 0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            VM, "-o", "endpoint=" + emulator.url, "gdrive:x", d],
                           capture_output=True, text=True, timeout=60)
        if r.stderr.startswith("setpriv:"):
            pytest.skip("nobody cannot run %s here: %s" % (VM, r.stderr.strip()))
        assert r.returncode != 0
        assert "not writable" in r.stderr
    finally:
        os.rmdir(d)


def test_bad_credentials_are_refused_before_mounting(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    write_config(m.conf, dict(TOKEN, refresh_token="revoked"))
    r = run_argv(m.argv("gdrive:x", m.mnt))
    assert r.returncode != 0
    assert r.stderr.strip()
    assert not os.path.ismount(m.mnt)


def test_unknown_remote_is_refused_in_daemon_mode_too(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    r = run_argv(m.argv("nosuch:x", m.mnt))  # no -f: the error must still show
    assert r.returncode != 0
    assert "nosuch" in r.stderr
    assert not os.path.ismount(m.mnt)


# Every option is judged before the config, the credentials or Drive are
# looked at: an unknown one (or a libfuse option vectur-mount sets itself,
# or a FUSE option with a bad value) is named, exits 2 (usage) and leaves
# nothing behind: no Drive request, no folder created, no cache dir.
REFUSED_OPTIONS = [
    (["-o", "nosuchopt"], "unknown option 'nosuchopt'"),
    (["-o", "no_such_option=1"], "unknown option 'no_such_option=1'"),
    (["--foo"], "unknown option '--foo'"),
    (["-o", "nodev=1"], "unknown option 'nodev=1'"),  # a flag given a value
    (["-o", "kernel_cache"], "'kernel_cache' is not supported"),
    (["-o", "umask=xyz"], "umask=xyz"),  # libfuse judges the value, up front
    # 0 is "never" for poll_interval, but a read cannot wait forever: refused
    # rather than quietly taken as 60 s.
    (["-o", "read_timeout=0"], "'read_timeout=0' is out of range: more than 0"),
    (["-o", "tpslimit=0"], "'tpslimit=0' is out of range: 1 to 100000"),
    # Values that used to be replaced quietly (0 transfers ran 1, a lease
    # of 0 was 60 s) or overflowed an int (write_back in ms).
    (["-o", "transfers=0"], "'transfers=0' is out of range: 1 to 64"),
    (["-o", "lock_ttl=0"], "'lock_ttl=0' is out of range: 3 s to 1 day"),
    (["-o", "write_back=720h"], "'write_back=720h' is out of range"),
    (["-o", "chunk_size=300K"], "a multiple of 256K"),
]


@pytest.mark.parametrize("args,message", REFUSED_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_unknown_option_is_refused_before_anything_is_touched(emulator, tmp_path, args,
                                                               message):
    m = Mount(emulator, tmp_path)
    emulator.reset_stats()
    try:
        r = run_argv(m.argv(*args, "gdrive:" + m.folder + "/sub", m.mnt))  # daemon mode
        mounted = os.path.ismount(m.mnt)
    finally:
        m.cleanup()  # unmounts if it mounted after all
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert emulator.stats()["total"] == 0, emulator.stats()  # not even a token refresh
    assert drive_lookup(emulator, m.folder, "") is None  # the missing folder not created
    assert not os.path.exists(m.cache)
    assert not mounted


def test_unknown_option_is_refused_by_check_and_sync_too(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    emulator.reset_stats()
    r = run_vm("--check", "--config", m.conf, "-o", "endpoint=%s,nosuchopt" % emulator.url,
               "gdrive:")
    assert r.returncode == 2 and "unknown option 'nosuchopt'" in r.stderr, r.stderr
    r = run_vm("--sync", "--bogus", m.mnt)
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr, r.stderr
    assert emulator.stats()["total"] == 0


def help_option_list(text, label):
    """The comma-separated option names --help gives after `label:`
    (wrapped lines included), in order."""
    m = re.search(r"^ +%s: +(.*?)(?:\n\n|\n(?! {8,})|\Z)" % re.escape(label), text,
                  re.M | re.S)
    assert m, "no %r list in --help:\n%s" % (label, text)
    return [w.strip() for w in " ".join(m.group(1).split()).rstrip(".").split(",")]


def test_help_lists_every_fstab_option_that_is_ignored():
    ignored = help_option_list(run_vm("--help").stdout, "ignored (fstab only)")
    assert set(ignored) >= {"_netdev", "noauto", "auto", "user", "users", "nouser",
                            "nofail", "defaults", "owner", "group", "nobootwait",
                            "comment=TEXT", "x-*"}, ignored


# Sample values for the FUSE options --help lists as passed on.
FUSE_SAMPLES = {"fsname": "vectur-test", "subtype": "vtest",
                "umask": "022", "uid": "0", "gid": "0", "user": "root"}


def test_every_option_help_lists_is_accepted_by_a_mount(emulator, tmp_path):
    """What --help says is passed on or ignored really mounts: all of it at
    once (ro last so that rw,ro means read-only), and a given fsname= and
    subtype= are the ones the mount shows."""
    text = run_vm("--help").stdout
    opts = []
    for name in help_option_list(text, "passed to FUSE") + \
            help_option_list(text, "ignored (fstab only)"):
        if name == "ro":
            continue  # last, below
        base, eq, _ = name.partition("=")
        if name.endswith("*"):
            opts.append(name[:-1] + "systemd.automount")
        elif eq:
            opts.append(base + "=" + FUSE_SAMPLES.get(base, "x"))
        else:
            opts.append(name)
    m = Mount(emulator, tmp_path)
    try:
        m.start(extra=",".join(opts + ["ro"]))
        with open("/proc/self/mounts") as f:
            line = [l.split() for l in f if l.split()[1] == m.mnt][0]
        assert line[0] == "vectur-test" and line[2] == "fuse.vtest", line
        assert "ro" in line[3].split(","), line
        assert os.path.isfile(m.p(".vectur/status"))  # it serves
    finally:
        m.cleanup()


def test_default_cache_dir_is_per_remote_path_and_mount_point(emulator, tmp_path):
    m = Mount(emulator, tmp_path)
    env = dict(m.env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    argv = [VM, "--config", m.conf, "-o", "endpoint=" + emulator.url,
            "gdrive:" + m.folder, m.mnt]
    pid = None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        st = json.load(open(m.p(".vectur/status")))["mount"]
        pid = st["pid"]
        parent, base = os.path.split(st["cache_dir"])
        assert parent == str(tmp_path / "xdg" / "vectur")
        assert base.startswith("gdrive-")
        assert os.stat(st["cache_dir"]).st_mode & 0o777 == 0o700
    finally:
        subprocess.run(["fusermount3", "-u", m.mnt], capture_output=True)
        if pid is not None:
            wait_for(lambda: not os.path.exists("/proc/%d" % pid), 60, "the daemon to exit")


# ---- the overlay and the data path ------------------------------------------

def test_local_file_stays_visible_and_local(mount):
    mount.start()
    assert open(mount.p("train.py")).read().startswith("import os")
    assert "train.py" in os.listdir(mount.mnt)
    # .vectur is there by name, but not listed: find/du/grep -r/git add -A
    # must not walk into .vectur/local (the root again) or open .vectur/sync.
    assert ".vectur" not in os.listdir(mount.mnt)
    assert os.path.isfile(mount.p(".vectur/status"))
    r = subprocess.run(["find", mount.mnt], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and ".vectur" not in r.stdout, r.stderr
    r = subprocess.run(["du", "-s", mount.mnt], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    with open(mount.p("notes.txt"), "w") as f:
        f.write("local")
    mount.stop()
    assert open(os.path.join(mount.mnt, "notes.txt")).read() == "local"
    assert drive_lookup(mount.emu, mount.folder, "notes.txt") is None


def test_checkpoint_lands_on_drive_with_the_right_md5(mount):
    mount.start()
    os.makedirs(mount.p("runs/exp1"))
    data = os.urandom(3 << 20) + b"tail"
    fd = os.open(mount.p("runs/exp1/ckpt.pt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(0, len(data), 1 << 20):
        os.write(fd, data[i:i + (1 << 20)])
    os.close(fd)
    assert os.path.getsize(mount.p("runs/exp1/ckpt.pt")) == len(data)
    f = wait_on_drive(mount.emu, mount.folder, "runs/exp1/ckpt.pt", data)
    assert drive_bytes(mount.emu, f["id"]) == data
    # Nothing of it went to the local directory.
    mount.stop()
    assert not os.path.exists(os.path.join(mount.mnt, "runs", "exp1"))


def test_json_dump_tmp_then_replace_updates_the_graph_on_drive(mount):
    os.makedirs(mount.p("experiments"))
    mount.start()
    for v in (1, 2):
        with open(mount.p("experiments/work_graph.json.tmp"), "w") as f:
            json.dump({"version": 1, "stages": [], "rev": v}, f)
        os.replace(mount.p("experiments/work_graph.json.tmp"),
                   mount.p("experiments/work_graph.json"))
        assert json.load(open(mount.p("experiments/work_graph.json")))["rev"] == v
        assert sorted(os.listdir(mount.p("experiments"))) == ["work_graph.json"]
    want = json.dumps({"version": 1, "stages": [], "rev": 2}).encode()
    wait_on_drive(mount.emu, mount.folder, "experiments/work_graph.json", want)
    assert drive_lookup(mount.emu, mount.folder, "experiments/work_graph.json.tmp") is None


def test_appending_to_a_log_keeps_every_line(mount):
    mount.start()
    os.makedirs(mount.p("runs/r"))
    lines = []
    for i in range(5):
        with open(mount.p("runs/r/train.log"), "a") as f:
            f.write("step %d\n" % i)
        lines.append("step %d\n" % i)
    assert open(mount.p("runs/r/train.log")).read() == "".join(lines)
    wait_on_drive(mount.emu, mount.folder, "runs/r/train.log", "".join(lines).encode())


def test_remount_with_an_empty_cache_reads_everything_back_from_drive(mount):
    mount.start()
    os.makedirs(mount.p("runs/a/b"))
    files = {"runs/a/b/ckpt.pt": os.urandom(1 << 20), "runs/a/meta.json": b'{"x": 1}'}
    for rel, data in files.items():
        with open(mount.p(rel), "wb") as f:
            f.write(data)
    os.makedirs(mount.p("experiments"))
    with open(mount.p("experiments/work_graph.json"), "w") as f:
        f.write('{"version": 1}')
    files["experiments/work_graph.json"] = b'{"version": 1}'
    assert mount.stop() == 0
    for rel, data in files.items():
        wait_on_drive(mount.emu, mount.folder, rel, data, timeout=5)

    mount.start(cache=str(mount.tmp / "cache2"))
    for rel, data in files.items():
        assert open(mount.p(rel), "rb").read() == data, rel
    assert sorted(os.listdir(mount.p("runs/a"))) == ["b", "meta.json"]


def test_reads_at_any_offset_return_the_bytes_there_on_every_kind_of_file(mount):
    # Reads hand libfuse a descriptor (spliced to the kernel) for cached and
    # local files, and a buffer for the status file: every one must give the
    # bytes at the offset, short at the end of the file, empty past it.
    mount.start()
    os.makedirs(mount.p("runs/o"))
    data = os.urandom((3 << 20) + 4321)
    with open(mount.p("runs/o/ckpt.pt"), "wb") as f:
        f.write(data)
    with open(mount.p("local.bin"), "wb") as f:
        f.write(data)
    assert mount.stop() == 0
    wait_on_drive(mount.emu, mount.folder, "runs/o/ckpt.pt", data, timeout=5)
    mount.start(cache=str(mount.tmp / "cache2"))  # the checkpoint is cold
    offsets = [len(data) - 1000, 0, 4095, (2 << 20) + 17, len(data) - 1, len(data),
               len(data) + 5000]
    for rel in ("runs/o/ckpt.pt", "local.bin"):
        fd = os.open(mount.p(rel), os.O_RDONLY)
        try:
            for off in offsets:
                assert os.pread(fd, 70000, off) == data[off:off + 70000], (rel, off)
            with open(fd, "rb", closefd=False) as f, \
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                assert m[(1 << 20) - 3:(1 << 20) + 5] == data[(1 << 20) - 3:(1 << 20) + 5]
                assert m[len(data) - 10:] == data[-10:]
        finally:
            os.close(fd)
    status = open(mount.p(".vectur/status"), "rb").read()
    fd = os.open(mount.p(".vectur/status"), os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 2) == status[2:12]
        assert os.pread(fd, 10, len(status) + 3) == b""
    finally:
        os.close(fd)
    assert json.loads(status)["mount"]["remote"] == "gdrive"


def test_local_training_script_runs_in_the_mount(mount):
    mount.start()
    r = subprocess.run([sys.executable, "train.py"], cwd=mount.mnt, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "local script ran" in r.stdout
    wait_on_drive(mount.emu, mount.folder, "runs/t/out.txt", b"trained\n")


def test_status_file_is_json_with_mount_info(mount):
    mount.start()
    st = json.load(open(mount.p(".vectur/status")))
    assert st["mount"]["remote"] == "gdrive"
    assert st["mount"]["pid"] == mount.proc.pid
    assert st["mount"]["persist"] == ["runs/**", "experiments/work_graph.json", "locks/**"]
    with pytest.raises(OSError):
        open(mount.p(".vectur/status"), "w")


def test_sync_returns_after_the_data_is_on_drive(mount):
    mount.start(extra="write_back=30")  # upload would otherwise wait 30 s
    os.makedirs(mount.p("runs/s"))
    data = os.urandom(2 << 20)
    with open(mount.p("runs/s/ckpt.pt"), "wb") as f:
        f.write(data)
    r = run_vm("--sync", mount.mnt, timeout=120)
    assert r.returncode == 0, r.stderr
    f = drive_lookup(mount.emu, mount.folder, "runs/s/ckpt.pt")
    assert f is not None and f["md5Checksum"] == md5_bytes(data)


def test_what_was_uploaded_is_read_back_from_the_cache(mount):
    # A checkpoint read back after its upload (evaluation, resume) must
    # not download it again: the clean copy stays cached, also once the
    # changes feed has brought our own uploads back, and after a remount
    # with the same cache dir.
    mount.start(extra="write_back=0")
    os.makedirs(mount.p("runs/r"))
    want = {}

    def put(rel, data, mode="wb", fsync=False):
        with open(mount.p(rel), mode) as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        want[rel] = want.get(rel, b"") + data if "a" in mode else data

    put("runs/r/closed.pt", os.urandom(3 << 20))
    put("runs/r/fsynced.pt", os.urandom(3 << 20), fsync=True)
    put("runs/r/rewritten.pt", os.urandom(12 << 20))
    put("runs/r/rewritten.pt", os.urandom(3 << 20))  # while the first uploads
    put("runs/r/moved.tmp", os.urandom(1 << 20))
    put("runs/r/log.txt", b"step 1\n", "ab")
    assert run_vm("--sync", mount.mnt, timeout=120).returncode == 0
    os.replace(mount.p("runs/r/moved.tmp"), mount.p("runs/r/closed.pt"))
    want["runs/r/closed.pt"] = want.pop("runs/r/moved.tmp")
    put("runs/r/log.txt", b"step 2\n", "ab")
    assert run_vm("--sync", mount.mnt, timeout=120).returncode == 0
    time.sleep(2.5)  # the feed (poll_interval=1) brings our uploads back

    def downloads_to_read_back():
        mount.emu.reset_stats()
        for rel, data in want.items():
            with open(mount.p(rel), "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                assert f.read() == data, rel
        return mount.emu.stats()["requests"].get("download", 0)
    assert downloads_to_read_back() == 0
    mount.stop()
    mount.start()
    assert downloads_to_read_back() == 0


def test_second_mount_on_the_same_cache_dir_is_refused(mount, tmp_path):
    mount.start()
    other = tmp_path / "other"
    other.mkdir()
    try:
        # Daemon mode: a wrongly accepted mount would return instead of hang.
        r = run_argv(mount.argv("gdrive:" + mount.folder, str(other)), timeout=60)
        assert r.returncode != 0
        assert "cache" in r.stderr.lower()
        assert not os.path.ismount(str(other))
    finally:
        if os.path.ismount(str(other)):
            subprocess.run(["fusermount3", "-u", str(other)])


def test_shadowed_local_file_is_reported_and_kept(mount):
    os.makedirs(mount.p("runs"))
    with open(mount.p("runs/old.txt"), "w") as f:
        f.write("from before vectur")
    mount.start()
    st = json.load(open(mount.p(".vectur/status")))
    assert "runs" in st["mount"]["shadowed"]
    assert "hidden" in mount.logtext()
    # Still readable (not writable) through the control directory, so it
    # can be copied onto Drive without unmounting.
    hidden = mount.p(".vectur/local/runs/old.txt")
    assert open(hidden).read() == "from before vectur"
    with pytest.raises(OSError):
        open(hidden, "a")
    with pytest.raises(OSError):
        os.unlink(hidden)
    os.mkdir(mount.p("runs"))  # the Drive side of runs/ is new
    with open(mount.p("runs/old.txt"), "w") as f:
        f.write(open(hidden).read())
    wait_on_drive(mount.emu, mount.folder, "runs/old.txt", b"from before vectur")
    mount.stop()
    assert open(os.path.join(mount.mnt, "runs", "old.txt")).read() == "from before vectur"


def run_daemon_mount(m, cwd=None):
    """Mounts m in daemon mode (started in cwd), unmounts it once it is up
    and returns vectur-mount's stderr; the daemon is gone by then."""
    pid = None
    try:
        r = subprocess.run([str(a) for a in m.argv("gdrive:" + m.folder, m.mnt)],
                           capture_output=True, text=True, timeout=60, cwd=cwd)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(m.mnt)
        pid = json.load(open(m.p(".vectur/status")))["mount"]["pid"]
        subprocess.run(["fusermount3", "-u", m.mnt], check=True)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), 60, "the daemon to exit")
        pid = None
        return r.stderr
    finally:
        if os.path.ismount(m.mnt):
            subprocess.run(["fusermount3", "-u", m.mnt])
        if pid is not None and os.path.exists("/proc/%d" % pid):
            os.kill(pid, signal.SIGKILL)


def test_daemon_mode_returns_once_mounted_and_unmounts(emulator, tmp_path):
    err = run_daemon_mount(Mount(emulator, tmp_path))
    assert "current directory" not in err


def test_mounting_from_inside_the_mount_point_warns_to_cd_again(emulator, tmp_path):
    # The shell that ran vectur-mount from the code directory stays in the
    # directory underneath: its train.py would write checkpoints there,
    # never to Drive. vectur-mount says so, and how to get in.
    m = Mount(emulator, tmp_path)
    os.makedirs(m.p("sub"))
    err = run_daemon_mount(m, cwd=m.p("sub"))
    assert "current directory %s is under the mount point" % m.p("sub") in err
    assert 'cd "$PWD"' in err


def test_fstab_style_mount_through_mount_fuse(emulator, tmp_path):
    """What `mount` does for an /etc/fstab line of type fuse.vectur-mount:
    run mount.fuse3 with mount(8)-only options mixed in; it finds
    vectur-mount on PATH (mount(8) itself resets PATH, so it is called
    directly here)."""
    m = Mount(emulator, tmp_path)
    env = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
    opts = "rw,nodev,nosuid,_netdev,noatime,config=%s,%s" % (m.conf, m.opts())
    pid = None
    try:
        r = subprocess.run(["mount.fuse3", "gdrive:" + m.folder, m.mnt,
                            "-t", "fuse.vectur-mount", "-o", opts],
                           capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(m.mnt)
        pid = json.load(open(m.p(".vectur/status")))["mount"]["pid"]
        with open(m.p("train.py"), "w") as f:
            f.write("print(1)\n")
        subprocess.run(["fusermount3", "-u", m.mnt], check=True)
        wait_for(lambda: not os.path.exists("/proc/%d" % pid), 60, "the daemon to exit")
        pid = None
        assert open(os.path.join(m.mnt, "train.py")).read() == "print(1)\n"
    finally:
        if os.path.ismount(m.mnt):
            subprocess.run(["fusermount3", "-u", m.mnt])
        if pid is not None and os.path.exists("/proc/%d" % pid):
            os.kill(pid, signal.SIGKILL)


def test_allow_other_with_a_value_mounts(emulator, tmp_path):
    # -o allow_other=1 as the man page writes it: libfuse refused it
    # ("unknown option"); =0 leaves it off.
    m = Mount(emulator, tmp_path)
    try:
        m.start(extra="allow_other=1,debug=0")
        assert "allow_other" in super_options(m.mnt)
        m.stop()
        m.start(extra="allow_other=0")
        assert "allow_other" not in super_options(m.mnt)
    finally:
        m.cleanup()


def super_options(mnt):
    """The mount's options as the kernel keeps them (mountinfo, after
    " - ": type, source, options)."""
    with open("/proc/self/mountinfo") as f:
        line = [x for x in f if " %s " % mnt in x][0]
    return line.split(" - ")[1].split()[2]
