"""test_mount_helpers.py — the laptop-to-instance helpers in mount-helpers/
and the demo's scripts.

- shellcheck on every script in mount-helpers/ and demo/*.sh;
- `vectur-setup`: --help, argument errors (clear message, exit 2, nothing
  run), and the exact commands --dry-run prints for --rclone (SSH tunnel and
  token paste), --install (rsync and tar) and --launch;
- the scripts vectur-setup sends to an instance, run for real on this
  machine: a fake `ssh` on PATH runs the remote command locally (never any
  network) — the token-paste config writer, and --launch against the Drive
  emulator in a private tmux server, until the graph completes;
- vast-onstart.sh for real, configured only by environment variables
  (RCLONE_CONFIG_GDRIVE_* with a service account: the README's recipe);
- the systemd units (systemd-analyze verify) and the fstab line (through
  mount.fuse3, as mount(8) runs it);
- the demo's example code: train.py resumes bit-identically after kill -9.

Standard library + pytest; fixtures from tests/conftest.py. FUSE tests need
root and /dev/fuse and clean up their mounts, tmux servers and processes by
PID."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPERS = os.path.join(REPO, "mount-helpers")
SETUP = os.path.join(HELPERS, "vectur-setup")
ONSTART = os.path.join(HELPERS, "vast-onstart.sh")
DEMO = os.path.join(REPO, "demo")
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
VM = os.path.join(BIN, "vectur-mount")
VS = os.path.join(BIN, "vectur-sched")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

TOKEN = {"access_token": "expired", "token_type": "Bearer",
         "refresh_token": "test-refresh-token", "expiry": "2000-01-01T00:00:00Z"}

can_mount = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse")
    or not os.access(VM, os.X_OK) or not os.access(VS, os.X_OK),
    reason="needs root, /dev/fuse and built vectur-mount/vectur-sched")
need_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")


def scripts():
    out = []
    for name in sorted(os.listdir(HELPERS)):
        path = os.path.join(HELPERS, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            head = f.read(64)
        if name.endswith(".sh") or head.startswith(b"#!") and b"sh" in head.split(b"\n")[0]:
            out.append(path)
    out += sorted(os.path.join(DEMO, n) for n in os.listdir(DEMO) if n.endswith(".sh"))
    return out


# ---- a fake ssh / rsync / rclone on PATH --------------------------------------------

FAKE_SSH = r"""#!/bin/sh
# Test double for ssh: logs its argv; runs the remote command locally (in $HOME)
# only when FAKE_SSH_EXEC=1, otherwise fails like an unreachable host.
printf '%s\n' "$*" >>"$FAKE_LOG"
[ "${FAKE_SSH_EXEC:-0}" = 1 ] || { echo "fake ssh: no network in tests" >&2; exit 255; }
while [ $# -gt 0 ]; do
  case $1 in
    -p|-i|-o|-L|-l|-R|-D|-J|-F) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
shift                       # the destination
cd "$HOME" && exec sh -c "$*"
"""

FAKE_OTHER = r"""#!/bin/sh
printf '%s %s\n' "${0##*/}" "$*" >>"$FAKE_LOG"
case "${0##*/} $1" in
  "rclone authorize")
    echo "Paste the following into your remote machine --->"
    printf '%s\n' "$FAKE_TOKEN"
    echo "<---End paste"
    exit 0 ;;
  "rclone listremotes")
    printf '%s' "${FAKE_REMOTES:-}" | tr ' ' '\n'
    exit 0 ;;
  "rclone config")
    exit 0 ;;
esac
echo "fake ${0##*/}: not in tests" >&2
exit 1
"""


@pytest.fixture
def fake(tmp_path):
    """PATH with fake ssh/rsync/rclone that log every call to .log."""
    d = tmp_path / "fakebin"
    d.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("rsync", FAKE_OTHER), ("rclone", FAKE_OTHER)):
        p = d / name
        p.write_text(text)
        p.chmod(0o755)
    log = tmp_path / "fake.log"
    log.write_text("")

    class Fake:
        pass
    fk = Fake()
    fk.dir = str(d)
    fk.log = log
    fk.env = dict(os.environ, PATH=str(d) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
                  FAKE_LOG=str(log), HOME=str(tmp_path / "home"))
    for k in ("VECTUR_CLIENT_ID", "VECTUR_CLIENT_SECRET", "RCLONE_CONFIG", "TMUX"):
        fk.env.pop(k, None)
    os.makedirs(fk.env["HOME"], exist_ok=True)
    fk.calls = lambda: [l for l in log.read_text().splitlines() if l]
    return fk


def run_setup(fake, *args, env=None, input=None, timeout=60):
    e = dict(fake.env)
    e.update(env or {})
    return subprocess.run([SETUP] + list(args), env=e, capture_output=True, text=True,
                          input=input, timeout=timeout)


# ---- shellcheck ----------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("path", scripts(), ids=lambda p: os.path.relpath(p, REPO))
def test_shellcheck(path):
    r = subprocess.run(["shellcheck", "-x", path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_scripts_are_executable_and_strict():
    for path in scripts():
        assert os.access(path, os.X_OK), path + " is not executable"
        text = open(path).read()
        assert "set -euo pipefail" in text, path
    assert os.access(os.path.join(DEMO, "run.sh"), os.X_OK)  # make demo needs -x


# ---- vectur-setup: help and argument errors --------------------------------------------

def test_help(fake):
    r = run_setup(fake, "--help")
    assert r.returncode == 0, r.stderr
    for word in ("--rclone HOST", "--rclone-token-paste", "--install HOST", "--launch HOST",
                 "--remote-repo-dir", "--remote REMOTE:PATH", "--port", "--user",
                 "--client-id", "--client-secret", "--dry-run", "vectur_sched",
                 "53682"):
        assert word in r.stdout, word
    assert r.stderr == ""
    assert fake.calls() == []
    assert run_setup(fake, "-h").stdout == r.stdout


BAD_ARGS = [
    ([], "nothing to do"),
    (["--bogus"], "unknown option: --bogus"),
    (["--rclone"], "--rclone needs a value"),
    (["--rclone", ""], "--rclone needs a value"),
    (["--install"], "--install needs a value"),
    (["--launch", "h"], "--launch needs --remote-repo-dir"),
    (["--launch", "h", "--remote-repo-dir"], "--remote-repo-dir needs a value"),
    (["--launch", "h", "--remote-repo-dir", "rel/dir"], "not an absolute path"),
    (["--launch", "h", "--remote-repo-dir", "/w", "--remote", "nocolon"], "not REMOTE:PATH"),
    (["--launch", "h", "--remote-repo-dir", "/w", "--mount-opts", "-o x=1"], "without -o"),
    (["--rclone", "h", "--port", "abc"], "--port: 'abc' is not a port number"),
    (["--rclone", "h", "--port", "70000"], "not a port number"),
    (["--rclone", "h", "--port", "0"], "not a port number"),
    (["--rclone", "-oProxyCommand=touch /tmp/x"], "is not a host name"),
    (["--rclone", "h;rm -rf /"], "is not a host name"),
    (["--rclone", "h", "--user", "-x"], "not a user name"),
    (["--rclone-token-paste"], "--rclone-token-paste goes with --rclone"),
    (["--rclone", "h", "--client-id", "x"], "--client-id needs --client-secret"),
    (["--rclone", "h", "--client-secret", "x"], "--client-secret needs --client-id"),
    (["--rclone", "h", "--remote-name", "a b"], "not a valid rclone remote name"),
    (["--rclone", "h", "--client-id", "a\nb", "--client-secret", "s"], "one line"),
    (["--rclone", "h", "--client-id", "a", "--client-secret", "s\r"], "one line"),
    (["--install", "h", "--copy", "scp"], "neither rsync nor tar"),
    (["--install", "h", "--prefix", "usr"], "not an absolute path"),
    (["--rclone", "h", "--copy", "tar"], "--copy goes with --install"),
    (["--rclone", "h", "--src", "/tmp"], "--src goes with --install"),
    (["--rclone", "h", "--remote-repo-dir", "/w"], "go with --launch HOST"),
    (["stray"], "unexpected argument: stray"),
    (["--rclone", "h", "--", "x"], "unexpected argument: x"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_args(fake, args, message):
    r = run_setup(fake, *(args + ["--dry-run"] if args else []))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert "vectur-setup: " in r.stderr and "--help" in r.stderr
    assert r.stdout == ""
    assert fake.calls() == []  # nothing ran


def test_bad_args_without_dry_run_run_nothing(fake):
    r = run_setup(fake, "--launch", "h")
    assert r.returncode == 2 and "--remote-repo-dir" in r.stderr
    assert fake.calls() == []


def test_equals_form(fake):
    r = run_setup(fake, "--dry-run", "--rclone=h", "--port=2222")
    assert r.returncode == 0, r.stderr
    assert "ssh -p 2222 " in r.stdout


# ---- vectur-setup --dry-run: the commands ------------------------------------------------

def commands(out):
    return [l[2:] for l in out.splitlines() if l.startswith("+ ")]


def test_dry_run_rclone_tunnel(fake):
    r = run_setup(fake, "--dry-run", "--rclone", "ssh4.vast.ai", "--port", "41234",
              "--client-id", "cid.apps.googleusercontent.com", "--client-secret", "s3cr et")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert len(cmds) == 2, r.stdout
    # First the client id and secret, into the instance's rclone.conf through
    # ssh's stdin ...
    assert cmds[0] == "ssh -p 41234 root@ssh4.vast.ai bash -s <<'VECTUR_EOF'", cmds
    body = r.stdout.split("<<'VECTUR_EOF'\n", 1)[1].split("\nVECTUR_EOF\n", 1)[0]
    for line in ("client_id = cid.apps.googleusercontent.com", "client_secret = s3cr et",
                 "type = drive", "scope = drive", "umask 077"):
        assert line in body, line
    # ... then the tunnel, whose command line names only the remote.
    c = cmds[1]
    assert c.startswith("ssh -p 41234 -t -o ExitOnForwardFailure=yes "
                        "-L 53682:127.0.0.1:53682 root@ssh4.vast.ai '"), c
    assert "rclone config update --auth-no-open-browser gdrive" in c
    assert "s3cr" not in c and "client_" not in c and "cid.apps" not in c, c
    assert "127.0.0.1:53682" in r.stderr  # tells the user what to open
    assert "shared client id" not in r.stderr
    assert fake.calls() == []


def test_dry_run_rclone_tunnel_shared_client_warns(fake):
    r = run_setup(fake, "-n", "--rclone", "alice@h", "--user", "bob", "--identity", "/k/id",
              "--remote-name", "drv", "--team-drive", "0ABC", "--ssh-option",
              "StrictHostKeyChecking=accept-new")
    assert r.returncode == 0, r.stderr
    c = commands(r.stdout)[0]
    assert c.startswith("ssh -p 22 -i /k/id -o StrictHostKeyChecking=accept-new -t "), c
    assert " alice@h " in c and "bob@" not in c
    assert "rclone config create --auth-no-open-browser drv drive scope=drive team_drive=0ABC" in c
    assert "client_id" not in c
    assert "shared client id" in r.stderr


def test_dry_run_rclone_token_paste(fake):
    r = run_setup(fake, "--dry-run", "--rclone", "h", "--rclone-token-paste", "--port", "2200",
              "--client-id", "cid", "--client-secret", "sec", "--team-drive", "0XYZ")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[0] == "rclone authorize drive cid sec"
    assert cmds[1] == "ssh -p 2200 root@h bash -s <<'VECTUR_EOF'"
    assert "-L" not in cmds[1]
    body = r.stdout.split("<<'VECTUR_EOF'\n", 1)[1]
    for line in ("[gdrive]", "type = drive", "scope = drive", "client_id = cid",
                 "client_secret = sec", "team_drive = 0XYZ",
                 "token = <the token rclone authorize printed>", "umask 077"):
        assert line in body, line
    assert r.stdout.rstrip().endswith("VECTUR_EOF")


def test_dry_run_install_tar(fake):
    r = run_setup(fake, "--dry-run", "--install", "h", "--port", "2222", "--copy", "tar")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[0].startswith("tar -C %s -czf - " % REPO), cmds[0]
    assert "--exclude=.git" in cmds[0] and "--exclude=build" in cmds[0]
    assert cmds[0].endswith("| ssh -p 2222 root@h 'mkdir -p vectur-src && tar -C vectur-src -xzf -'")
    assert cmds[1] == "ssh -p 2222 root@h bash -s <<'VECTUR_EOF'"
    assert "make deps && make && make install PREFIX=/usr/local" in r.stdout
    assert "sudo" not in r.stdout
    assert fake.calls() == []


def test_dry_run_install_rsync_non_root(fake):
    r = run_setup(fake, "--dry-run", "--install", "h", "--user", "ubuntu", "--copy", "rsync",
              "--remote-src-dir", "src/vectur", "--prefix", "/opt/vectur")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[0].startswith("rsync -az --delete "), cmds[0]
    assert "-e 'ssh -p 22' %s/ ubuntu@h:src/vectur/" % REPO in cmds[0]
    assert "cd src/vectur\nmake deps && make && sudo make install PREFIX=/opt/vectur" in r.stdout


def test_install_leaves_the_helpers_where_make_install_puts_them(fake):
    """--install runs make install and nothing else puts files in PREFIX: the
    on-start script is at PREFIX/share/vectur/vast-onstart.sh, as the README
    says, not in a second copy of mount-helpers/."""
    r = run_setup(fake, "--dry-run", "--install", "h", "--copy", "tar")
    assert r.returncode == 0, r.stderr
    script = r.stdout.split("<<'VECTUR_EOF'\n", 1)[1]
    assert "make install PREFIX=/usr/local" in script
    assert "mount-helpers" not in script and "cp " not in script, script
    assert "/usr/local/share/vectur/vast-onstart.sh" in script  # it says where


def onstart_paths_in_docs():
    """Every `.../share/vectur/...vast-onstart.sh` path the docs give."""
    paths = {}
    for doc in ("mount-helpers/README.md", "mount-helpers/vast-onstart.sh", "README.md",
                "man/vectur-setup.1"):
        text = open(os.path.join(REPO, doc)).read().replace("\\-", "-")
        for p in re.findall(r"(/\S+/share/vectur/\S*vast-onstart\.sh)", text):
            paths.setdefault(p, []).append(doc)
    return paths


def test_documented_onstart_path_is_where_make_install_puts_it(tmp_path):
    """The on-start box of the README (and the script's own header) name the
    file `make install PREFIX=/usr/local` really installs."""
    paths = onstart_paths_in_docs()
    assert "/usr/local/share/vectur/vast-onstart.sh" in paths, paths
    dest = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    if not (os.access(VM, os.X_OK) and os.access(VS, os.X_OK)):
        pytest.skip("binaries not built (make)")
    r = subprocess.run(["make", "-C", REPO, "-o", "all", "install", "DESTDIR=" + str(dest),
                        "PREFIX=/usr/local", "BIN=" + BIN], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for path, docs in paths.items():
        assert (dest / path.lstrip("/")).is_file(), "%s (in %s) is not installed" % (path, docs)
    unit_docs = [re.search(r"^Documentation=file:(\S+)", open(os.path.join(HELPERS, u)).read(),
                           re.M).group(1)
                 for u in ("vectur-mount@.service", "vectur-sched.service")]
    for path in unit_docs:
        assert (dest / path.lstrip("/")).is_file(), path


@pytest.fixture
def installed_setup(tmp_path):
    """vectur-setup as `make install` leaves it: in a bin/ with no source tree
    above it."""
    d = tmp_path / "prefix" / "bin"
    d.mkdir(parents=True)
    shutil.copy(SETUP, d / "vectur-setup")
    return str(d / "vectur-setup")


def test_installed_setup_says_install_needs_a_source_checkout(fake, installed_setup):
    r = subprocess.run([installed_setup, "--dry-run", "--install", "h"], env=fake.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "--install needs a vectur source checkout" in r.stderr, r.stderr
    assert installed_setup in r.stderr and "--src DIR" in r.stderr, r.stderr
    assert r.stdout == "" and fake.calls() == []
    # Other actions do not need one.
    r = subprocess.run([installed_setup, "--dry-run", "--launch", "h", "--remote-repo-dir",
                        "/w"], env=fake.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_installed_setup_installs_from_src(fake, installed_setup, tmp_path):
    r = subprocess.run([installed_setup, "--dry-run", "--install", "h", "--copy", "tar",
                        "--src", REPO], env=fake.env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout)[0].startswith("tar -C %s -czf - " % REPO), r.stdout
    r = subprocess.run([installed_setup, "--dry-run", "--install", "h", "--src",
                        str(tmp_path)], env=fake.env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "is not a vectur source checkout" in r.stderr, r.stderr


def test_dry_run_launch(fake):
    r = run_setup(fake, "--dry-run", "--launch", "ssh4.vast.ai", "--port", "41234",
              "--remote-repo-dir", "/workspace/vectur/code")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds == ["ssh -p 41234 root@ssh4.vast.ai bash -s <<'VECTUR_EOF'"], r.stdout
    assert "tmux has-session -t vectur_sched" in r.stdout
    m = re.search(r"^tmux new-session -d -s vectur_sched (.*)$", r.stdout, re.M)
    assert m, r.stdout
    inner = m.group(1)
    assert "vectur-mount gdrive:vectur/code /workspace/vectur/code" in inner
    assert "mountpoint -q /workspace/vectur/code" in inner
    assert "cd /workspace/vectur/code && vectur-sched --wait;" in inner
    # The status line names the codes `vectur-sched --wait` really ends with
    # (scheduler/README.md): never 3 or 4, which --wait waits through.
    said = re.search(r"exited with status \$\? \(([^)]*)\)", inner)
    assert said, inner
    codes = dict(re.findall(r"(\d+): ([^,;]+)", said.group(1)))
    assert set(codes) == {"0", "1", "2", "5", "6"}, said.group(1)
    assert codes["0"] == "graph complete"


def test_dry_run_launch_options(fake):
    r = run_setup(fake, "-n", "--launch", "h", "--remote-repo-dir", "/w/my code/",
              "--remote", "gdrive:experiments/proj", "--mount-opts", "write_back=2,poll_interval=10",
              "--sched-args", "--poll 30")
    assert r.returncode == 0, r.stderr
    inner = re.search(r"^tmux new-session -d -s vectur_sched (.*)$", r.stdout, re.M).group(1)
    assert "vectur-mount -o write_back=2,poll_interval=10 gdrive:experiments/proj" in inner
    assert "vectur-sched --wait --poll 30" in inner
    assert "my code" in inner


def test_dry_run_all_actions_in_order(fake):
    r = run_setup(fake, "-n", "--launch", "h3", "--remote-repo-dir", "/w", "--install", "h2",
              "--copy", "tar", "--rclone", "h1")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert "root@h1" in cmds[0] and "rclone config" in cmds[0]
    assert cmds[1].startswith("tar ") and "root@h2" in cmds[1]
    assert "root@h2" in cmds[2]
    assert "root@h3" in cmds[3]
    assert len(cmds) == 4


# ---- what vectur-setup sends, run for real (fake ssh runs it locally) ------------------------

def test_token_paste_writes_config(fake, tmp_path):
    home = fake.env["HOME"]
    conf = os.path.join(home, ".config", "rclone", "rclone.conf")
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as f:
        f.write("[other]\ntype = s3\n\n[gdrive]\ntype = drive\ntoken = OLD\n\n[last]\ntype = local\n")
    token = json.dumps(TOKEN)
    r = run_setup(fake, "--rclone", "h", "--rclone-token-paste", "--client-id", "cid",
              "--client-secret", "sec", env={"FAKE_SSH_EXEC": "1", "FAKE_TOKEN": token})
    assert r.returncode == 0, r.stdout + r.stderr
    text = open(conf).read()
    assert "OLD" not in text
    assert text.count("[gdrive]") == 1
    assert "[other]\ntype = s3" in text and "[last]\ntype = local" in text
    assert "token = " + token in text
    assert "client_id = cid\nclient_secret = sec" in text
    assert os.stat(conf).st_mode & 0o077 == 0
    calls = fake.calls()
    assert calls[0] == "rclone authorize drive cid sec"
    assert calls[1] == "-p 22 root@h bash -s"  # the token went on stdin, not argv
    assert token not in "\n".join(calls)


def test_rclone_tunnel_script_runs(fake):
    """What --rclone sends runs under a POSIX sh (the fake ssh uses sh -c):
    with a client id, the id and secret are written into rclone.conf (other
    keys and remotes kept) and the token is fetched by `rclone config
    update`; without one, create when the remote is new, reconnect when it
    exists."""
    conf = os.path.join(fake.env["HOME"], ".config", "rclone", "rclone.conf")
    os.makedirs(os.path.dirname(conf))
    with open(conf, "w") as f:
        f.write("[other]\ntype = s3\n\n[gdrive]\ntype = drive\nclient_id = old\n"
                "token = KEEP\n\n[last]\ntype = local\n")
    env = {"FAKE_SSH_EXEC": "1", "PATH": fake.dir + ":/usr/bin:/bin"}
    r = run_setup(fake, "--rclone", "h", "--client-id", "cid", "--client-secret", "a b'c",
                  env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = fake.calls()
    assert calls[0] == "-p 22 root@h bash -s", calls
    assert calls[1].startswith("-p 22 -t -o ExitOnForwardFailure=yes -L 53682:127.0.0.1:53682 "
                               "root@h "), calls
    assert calls[2:] == ["rclone config update --auth-no-open-browser gdrive"], calls
    text = open(conf).read()
    assert "[other]\ntype = s3" in text and "[last]\ntype = local" in text, text
    section = text.split("[gdrive]\n", 1)[1].split("\n[", 1)[0]
    assert "client_id = cid\n" in section and "client_secret = a b'c\n" in section, text
    assert "old" not in text and "token = KEEP" in section, text
    assert text.count("[gdrive]") == 1 and section.count("type = drive") == 1, text
    assert os.stat(conf).st_mode & 0o077 == 0
    # A remote that is not there yet gets its section.
    os.remove(conf)
    fake.log.write_text("")
    r = run_setup(fake, "--rclone", "h", "--remote-name", "drv", "--team-drive", "0T",
                  "--client-id", "cid", "--client-secret", "sec", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert open(conf).read().split() == "[drv] type = drive scope = drive client_id = cid " \
        "client_secret = sec team_drive = 0T".split(), open(conf).read()
    # Without a client id: nothing to write, rclone creates or reconnects.
    fake.log.write_text("")
    r = run_setup(fake, "--rclone", "h", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake.calls()[1:] == ["rclone listremotes",
                                "rclone config create --auth-no-open-browser gdrive drive "
                                "scope=drive"], fake.calls()
    fake.log.write_text("")
    env["FAKE_REMOTES"] = "other: gdrive:"
    r = run_setup(fake, "--rclone", "h", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fake.calls()[1:] == ["rclone listremotes",
                                "rclone config reconnect --auth-no-open-browser gdrive:"]


# Commands the scripts vectur-setup sends may run on the instance: with a spy
# of each on PATH, every argv they are given is logged.
SPIED = ("sh", "bash", "cat", "awk", "mv", "rm", "mkdir", "touch", "dirname", "hostname",
         "grep", "sed", "tr", "env", "printf", "echo", "apt-get")


def test_rclone_tunnel_keeps_the_secret_off_every_command_line(fake):
    """The instance's process list shows every argv: the client secret must
    be in none of them (ssh's remote command is run as `sh -c COMMAND`)."""
    for name in SPIED:
        real = shutil.which(name, path="/usr/bin:/bin")
        if real is None:
            continue
        spy = os.path.join(fake.dir, name)
        with open(spy, "w") as f:
            f.write('#!/bin/sh\nprintf \'%%s %%s\\n\' "${0##*/}" "$*" >>"$FAKE_LOG"\n'
                    'exec %s "$@"\n' % real)
        os.chmod(spy, 0o755)
    env = {"FAKE_SSH_EXEC": "1", "PATH": fake.dir + ":/usr/bin:/bin"}
    secret = "GOCSPX-s3cr3t-Value"
    r = run_setup(fake, "--rclone", "h", "--client-id", "cid.apps.googleusercontent.com",
                  "--client-secret", secret, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # All but vectur-setup's own command line (on the laptop, where the user
    # typed the secret): ssh's argv here, every argv there.
    calls = [c for c in fake.calls() if not c.startswith("bash %s " % SETUP)]
    assert any(c.startswith("sh -c ") for c in calls), calls  # the spies did see it run
    assert any(c.startswith("awk ") for c in calls), calls
    assert not [c for c in calls if secret in c or "cid.apps" in c], calls
    conf = os.path.join(fake.env["HOME"], ".config", "rclone", "rclone.conf")
    assert "client_secret = %s\n" % secret in open(conf).read()


def test_token_paste_rejects_garbage(fake):
    r = run_setup(fake, "--rclone", "h", "--rclone-token-paste",
              env={"FAKE_SSH_EXEC": "1", "FAKE_TOKEN": "not a token"})
    assert r.returncode != 0
    assert "refresh_token" in r.stderr
    assert not any(c.startswith("-p") for c in fake.calls())  # never reached ssh


def _write_graph(emulator, folder, stages):
    root = emulator.create_folder(folder)
    exp = emulator.create_folder("experiments", parent=root["id"])
    emulator.upload("work_graph.json", json.dumps({"version": 1, "stages": stages}).encode(),
                    parent=exp["id"])


GRAPH = [
    {"id": "one", "cmd": "echo one > $VECTUR_RUN_DIR/out.txt"},
    {"id": "two", "cmd": ["sh", "-c", "cat runs/one/out.txt > $VECTUR_RUN_DIR/out.txt"],
     "deps": ["one"]},
]


def _graph_done(code):
    try:
        with open(os.path.join(code, "experiments", "work_graph.json")) as f:
            g = json.load(f)
    except (OSError, ValueError):
        return False
    return all(s.get("status") == "done" for s in g["stages"])


def _wait(pred, timeout, what):
    end = time.time() + timeout
    while not pred():
        if time.time() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.2)


class Tmux:
    """A private tmux server (its own TMUX_TMPDIR), killed at the end."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="vh-tmux.")

    def env(self, base):
        e = dict(base, TMUX_TMPDIR=self.dir)
        e.pop("TMUX", None)
        return e

    def run(self, *args):
        return subprocess.run(["tmux"] + list(args), env=self.env(os.environ),
                              capture_output=True, text=True, timeout=10)

    def close(self):
        self.run("kill-server")
        shutil.rmtree(self.dir, ignore_errors=True)


def _unmount(code):
    """Unmount a daemon-mode vectur-mount we made and wait for its process."""
    pid = None
    try:
        with open(os.path.join(code, ".vectur", "status")) as f:
            pid = json.load(f)["mount"]["pid"]
    except (OSError, ValueError, KeyError):
        pass
    with open("/proc/self/mounts") as f:
        mounted = any(l.split()[1] == code for l in f)
    if mounted:
        r = subprocess.run(["fusermount3", "-u", code], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-uz", code], capture_output=True)
    if pid:
        end = time.time() + 30
        while time.time() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


@can_mount
@need_tmux
def test_launch_for_real(fake, emulator, tmp_path):
    """The --launch script, run by the fake ssh on this machine: a tmux session
    vectur_sched mounts the emulator's Drive over the code dir and runs the graph."""
    _write_graph(emulator, "proj", GRAPH)
    conf = tmp_path / "rclone.conf"
    conf.write_text("[gdrive]\ntype = drive\nscope = drive\ntoken = %s\n" % json.dumps(TOKEN))
    code = str(tmp_path / "code")
    os.makedirs(code)
    with open(os.path.join(code, "train.py"), "w") as f:
        f.write("print('local code stays')\n")
    tmux = Tmux()
    env = tmux.env(fake.env)
    env.update(FAKE_SSH_EXEC="1", RCLONE_CONFIG=str(conf),
               PATH=BIN + ":" + env["PATH"])
    opts = "endpoint=%s,cache_dir=%s,write_back=0.2,poll_interval=1" % (
        emulator.url, tmp_path / "cache")
    try:
        r = subprocess.run([SETUP, "--launch", "h", "--remote-repo-dir", code,
                            "--remote", "gdrive:proj", "--mount-opts", opts,
                            "--sched-args", "--poll 1"],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "started tmux session vectur_sched" in r.stdout
        assert tmux.run("has-session", "-t", "vectur_sched").returncode == 0
        _wait(lambda: _graph_done(code), 60, "the graph to complete in the tmux session")
        assert open(os.path.join(code, "runs", "two", "out.txt")).read() == "one\n"
        assert os.path.exists(os.path.join(code, "train.py"))  # the overlay kept the code
        # A second launch leaves the running session alone.
        r2 = subprocess.run([SETUP, "--launch", "h", "--remote-repo-dir", code,
                             "--remote", "gdrive:proj"],
                            env=env, capture_output=True, text=True, timeout=60)
        assert r2.returncode == 0 and "already running" in r2.stdout, r2.stdout + r2.stderr
        pane = lambda: tmux.run("capture-pane", "-p", "-t", "vectur_sched").stdout
        _wait(lambda: "vectur-sched exited with status 0" in pane(), 30,
              "the worker's exit in the tmux pane")
    finally:
        tmux.close()
        _unmount(code)


@pytest.fixture
def service_account(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    pem = tmp_path / "sa.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(pem)],
                   check=True, capture_output=True, timeout=60)
    creds = json.dumps({
        "type": "service_account", "project_id": "vectur-test", "private_key_id": "k1",
        "private_key": pem.read_text(),
        "client_email": "vectur-test@vectur-test.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token"}, indent=2)  # as pasted: multi-line
    return pem, creds


@can_mount
@need_tmux
def test_vast_onstart_for_real(emulator_factory, service_account, tmp_path):
    """vast-onstart.sh configured only by environment variables, with the
    README's service-account recipe (RCLONE_CONFIG_GDRIVE_*, no config file)."""
    pem, creds = service_account
    emu = emulator_factory(quiet=True, jwt_public_key=str(pem))
    _write_graph(emu, "fleet", GRAPH)
    code = str(tmp_path / "work" / "code")  # missing: the script creates it
    tmux = Tmux()
    env = tmux.env(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith(("RCLONE_", "VECTUR_"))}
    env.update(
        PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
        HOME=str(tmp_path / "home"),
        RCLONE_CONFIG=str(tmp_path / "no-such-rclone.conf"),
        RCLONE_CONFIG_GDRIVE_TYPE="drive",
        RCLONE_CONFIG_GDRIVE_SCOPE="drive",
        RCLONE_CONFIG_GDRIVE_SERVICE_ACCOUNT_CREDENTIALS=creds,
        VECTUR_REMOTE="gdrive:fleet",
        VECTUR_CODE_DIR=code,
        VECTUR_CACHE_DIR=str(tmp_path / "cache"),
        VECTUR_MOUNT_OPTS="endpoint=%s,write_back=0.2,poll_interval=1" % emu.url,
        VECTUR_SCHED_ARGS="--poll 1",
        VECTUR_ON_DONE="echo finished > %s" % (tmp_path / "done"),
        VECTUR_LOG=str(tmp_path / "onstart.log"))
    os.makedirs(env["HOME"])
    try:
        # A tmux server already runs, started without any of our variables: the
        # configuration must reach the session anyway.
        bare = {k: v for k, v in env.items() if not k.startswith(("RCLONE_", "VECTUR_"))}
        subprocess.run(["tmux", "new-session", "-d", "-s", "other", "sleep 600"], env=bare,
                       check=True, timeout=10)
        r = subprocess.run(["bash", ONSTART], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "started tmux session vectur_sched" in r.stderr
        _wait(lambda: os.path.exists(tmp_path / "done"), 60,
              "VECTUR_ON_DONE after the graph completed; log:\n"
              + open(tmp_path / "onstart.log").read())
        assert _graph_done(code)
        assert open(os.path.join(code, "runs", "two", "out.txt")).read() == "one\n"
        log = open(tmp_path / "onstart.log").read()
        assert "graph complete" in log
        # The credentials went through a 0600 file that the session removed.
        assert not [n for n in os.listdir(tempfile.gettempdir())
                    if n.startswith("vectur-onstart-env.") and
                    os.path.getmtime(os.path.join(tempfile.gettempdir(), n)) > time.time() - 120
                    and creds in open(os.path.join(tempfile.gettempdir(), n)).read()]
        # Started again (the instance restarted while the session lives): no-op.
        r2 = subprocess.run(["bash", ONSTART], env=env, capture_output=True, text=True,
                            timeout=60)
        assert r2.returncode == 0 and "already runs" in r2.stderr, r2.stderr
    finally:
        tmux.close()
        _unmount(code)


@pytest.mark.skipif(shutil.which("vectur-mount", path="/usr/bin:/bin") is not None,
                    reason="vectur-mount is installed system-wide")
def test_vast_onstart_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTUR_")}
    env.update(PATH="/usr/bin:/bin", VECTUR_LOG=str(tmp_path / "log"))
    r = subprocess.run(["bash", ONSTART], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "vectur-mount is not installed" in r.stderr
    env.update(PATH=BIN + ":/usr/bin:/bin", VECTUR_REMOTE="nocolon")
    r = subprocess.run(["bash", ONSTART], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is not REMOTE:PATH" in r.stderr, r.stderr


# ---- systemd units and fstab --------------------------------------------------------

def parse_unit(path):
    sections, cur = {}, None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        cur.setdefault(k, []).append(v)
    return sections


def seconds(v):
    m = re.fullmatch(r"(\d+)\s*(min|s|h)?", v)
    assert m, v
    return int(m.group(1)) * {"min": 60, "h": 3600, None: 1, "s": 1}[m.group(2)]


def test_mount_unit_contents():
    u = parse_unit(os.path.join(HELPERS, "vectur-mount@.service"))
    s = u["Service"]
    assert s["Type"] == ["simple"]
    start = s["ExecStart"][0].split()
    assert start[0].endswith("/vectur-mount") and "-f" in start
    assert start[-1] == "%f" and start[-2] == "${VECTUR_REMOTE}"
    assert any(a.startswith("cache_dir=") for a in ",".join(start).split(","))
    assert s["ExecStop"] == ["/usr/bin/fusermount3 -u %f"]
    drain = int(re.search(r"drain_timeout=(\d+)", s["ExecStart"][0]).group(1))
    assert seconds(s["TimeoutStopSec"][0]) >= drain + 60
    assert "/etc/vectur/%i.env" in s["EnvironmentFile"]
    assert "network-online.target" in u["Unit"]["After"][0]
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


def test_sched_unit_contents():
    u = parse_unit(os.path.join(HELPERS, "vectur-sched.service"))
    s = u["Service"]
    assert "vectur-sched --wait" in s["ExecStart"][0]
    assert "mountpoint -q" in s["ExecStartPre"][0]
    assert "vectur-mount@workspace-vectur-code.service" in u["Unit"]["Requires"][0]
    assert "vectur-mount@workspace-vectur-code.service" in u["Unit"]["After"][0]
    assert s["KillSignal"] == ["SIGTERM"]
    grace = int(re.search(r"--grace (\d+)", s["ExecStart"][0]).group(1))
    assert seconds(s["TimeoutStopSec"][0]) > grace
    assert set(s["RestartPreventExitStatus"][0].split()) >= {"5"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path):
    if subprocess.run(["systemd-escape", "--path", "/workspace/vectur/code"], capture_output=True,
                      text=True).stdout.strip() != "workspace-vectur-code":
        pytest.fail("systemd-escape disagrees with the documented instance name")
    # Binaries are looked up by verify: point the units at this build.
    for name in ("vectur-mount@.service", "vectur-sched.service"):
        text = open(os.path.join(HELPERS, name)).read().replace("/usr/local/bin/", BIN + "/")
        (tmp_path / name).write_text(text)
    shutil.copy(tmp_path / "vectur-mount@.service",
                tmp_path / "vectur-mount@workspace-vectur-code.service")
    if not os.access(VM, os.X_OK) or not os.access(VS, os.X_OK):
        pytest.skip("binaries not built")
    r = subprocess.run(["systemd-analyze", "verify",
                        str(tmp_path / "vectur-mount@workspace-vectur-code.service"),
                        str(tmp_path / "vectur-sched.service")],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Unknown" not in out and "ignoring" not in out.lower(), out


def fstab_line():
    lines = [l for l in open(os.path.join(HELPERS, "fstab.example"))
             if l.strip() and not l.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    return lines[0].split()


def test_fstab_contents():
    src, mnt, typ, opts, dump, pas = fstab_line()
    assert re.fullmatch(r"[A-Za-z0-9_-]+:\S*", src)
    assert mnt.startswith("/")
    assert typ == "fuse.vectur-mount"
    o = opts.split(",")
    for want in ("_netdev", "nofail"):
        assert want in o
    assert any(x.startswith("cache_dir=/") for x in o)
    assert any(x.startswith("config=/") for x in o)
    assert (dump, pas) == ("0", "0")


@can_mount
@pytest.mark.skipif(not os.path.exists("/sbin/mount.fuse3"), reason="no mount.fuse3")
def test_fstab_line_mounts(emulator, tmp_path):
    """mount(8) runs `mount.fuse3 SRC MNT -t vectur-mount -o OPTS` for a
    fuse.vectur-mount line; do the same with the example's options (config,
    cache_dir and the mount point swapped for temp ones, endpoint added)."""
    src, _, typ, opts, _, _ = fstab_line()
    conf = tmp_path / "rclone.conf"
    conf.write_text("[gdrive]\ntype = drive\nscope = drive\ntoken = %s\n" % json.dumps(TOKEN))
    o = [x for x in opts.split(",") if not x.startswith(("config=", "cache_dir="))]
    o += ["config=%s" % conf, "cache_dir=%s" % (tmp_path / "cache"), "endpoint=" + emulator.url]
    code = str(tmp_path / "code")
    os.makedirs(code)
    env = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
    try:
        r = subprocess.run(["/sbin/mount.fuse3", src, code, "-t", typ.split(".", 1)[1],
                            "-o", ",".join(o)], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.path.exists(os.path.join(code, ".vectur", "status"))
        os.makedirs(os.path.join(code, "runs"), exist_ok=True)
        with open(os.path.join(code, "runs", "x.txt"), "w") as f:
            f.write("via fstab\n")
        r = subprocess.run([VM, "--sync", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert any(f["name"] == "x.txt" and not f.get("trashed") for f in emulator.files())
    finally:
        _unmount(code)


# ---- the demo's example code ----------------------------------------------------------

def test_example_graph_validates(tmp_path):
    if not os.access(VS, os.X_OK):
        pytest.skip("vectur-sched not built")
    shutil.copytree(os.path.join(DEMO, "example"), tmp_path / "ex")
    r = subprocess.run([VS, "validate"], cwd=str(tmp_path / "ex"), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_train_resumes_bit_identically_after_kill(tmp_path):
    ex = tmp_path / "ex"
    shutil.copytree(os.path.join(DEMO, "example"), ex)
    env = dict(os.environ, DEMO_STEP_SECONDS="0")
    args = [PYTHON, "train.py", "--seed", "3", "--steps", "12"]
    subprocess.run(args + ["--out", "runs/ref"], cwd=str(ex), env=env, check=True,
                   capture_output=True, timeout=60)
    env.update(DEMO_STEP_SECONDS="0.1", VECTUR_ATTEMPT="1")
    p = subprocess.Popen(args + ["--out", "runs/t"], cwd=str(ex), env=env,
                         stdout=subprocess.DEVNULL)
    ckpt = ex / "runs" / "t" / "ckpt.json"
    try:
        _wait(lambda: ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 4, 30,
              "4 steps")
    finally:
        p.kill()
        p.wait()
    env.update(DEMO_STEP_SECONDS="0", VECTUR_ATTEMPT="2")
    r = subprocess.run(args + ["--out", "runs/t"], cwd=str(ex), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"attempt 2 resumes from checkpoint at step ([4-9]|1[01])/12", r.stdout), \
        r.stdout
    got = json.loads(ckpt.read_text())
    want = json.loads((ex / "runs" / "ref" / "ckpt.json").read_text())
    assert got["weights"] == want["weights"] and got["losses"] == want["losses"]
    assert got["resumes"][0]["attempt"] == 2 and got["resumes"][0]["from_step"] >= 4
    r = subprocess.run([PYTHON, "eval.py", "--run", "runs/t", "--out", "runs/e"], cwd=str(ex),
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((ex / "runs" / "e" / "metrics.json").read_text())
    assert m["ckpt_md5"] == hashlib.md5(ckpt.read_bytes()).hexdigest()
