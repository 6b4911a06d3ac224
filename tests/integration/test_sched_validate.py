"""vectur-sched on malformed graphs: every problem is reported with its
location (JSON path, or line:column for a syntax error), every command exits
non-zero, and no command ever rewrites the file (byte-identical after).

Runs on a plain temporary directory; binaries from $VECTUR_BIN (default
<repo>/bin).
"""

import json
import os
import re
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCHED = os.path.join(os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin")),
                     "vectur-sched")

GRAPH = "experiments/work_graph.json"


def sched(cwd, *args, timeout=30):
    return subprocess.run([SCHED, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def stages(*st):
    return json.dumps({"version": 1, "stages": list(st)}, indent=1)


def syntax_error_text():
    return '{"stages": [\n  {"id": "a", "cmd": "x"},,\n]}\n'


# (name, file text, expected message fragments)
MALFORMED = [
    ("syntax_error", syntax_error_text(),
     ["work_graph.json:2:27: JSON syntax error"]),
    ("truncated", '{"version": 1, "stages": [\n  {"id": "a"',
     ["work_graph.json:2:13: JSON syntax error: unexpected end of file"]),
    ("trailing_garbage", '{"stages": []}\n}\n',
     ["work_graph.json:2:1: JSON syntax error"]),
    ("cycle", stages({"id": "a", "cmd": "x", "deps": ["c"]},
                     {"id": "b", "cmd": "x", "deps": ["a"]},
                     {"id": "c", "cmd": "x", "deps": ["b"]}),
     ["dependency cycle: a -> c -> b -> a"]),
    ("unknown_dep", stages({"id": "a", "cmd": "x"},
                           {"id": "b", "cmd": "x", "deps": ["a", "nope"]}),
     ['stages[1].deps[1]: unknown stage id "nope"']),
    ("duplicate_id", stages({"id": "a", "cmd": "x"}, {"id": "b", "cmd": "y"},
                            {"id": "a", "cmd": "z"}),
     ['stages[2].id: duplicate id "a" (first at stages[0])']),
    ("missing_cmd", stages({"id": "a"}), ['stages[0]: missing "cmd"']),
    ("missing_id", stages({"id": "a", "cmd": "x"}, {"cmd": "x"}),
     ['stages[1]: missing "id"']),
    ("deps_not_array", stages({"id": "a", "cmd": "x", "deps": "b"}),
     ["stages[0].deps: must be an array, not a string"]),
    ("cmd_wrong_type", stages({"id": "a", "cmd": 42}),
     ["stages[0].cmd: must be a string or an array of strings, not an "
      "integer"]),
    ("argv_wrong_type", stages({"id": "a", "cmd": ["python3", 1]}),
     ["stages[0].cmd[1]: must be a string, not an integer"]),
    ("bad_status", stages({"id": "a", "cmd": "x", "status": "finished"}),
     ['stages[0].status: "finished" is not one of pending, running, done, '
      'failed']),
    ("bad_max_attempts", stages({"id": "a", "cmd": "x", "max_attempts": 0}),
     ["stages[0].max_attempts: must be >= 1"]),
    # Past the int the scheduler keeps them in (a cast made 4294967296 0).
    ("max_attempts_too_big",
     stages({"id": "a", "cmd": "x", "max_attempts": 4294967296}),
     ["stages[0].max_attempts: must be <= 2147483647"]),
    ("attempt_too_big", stages({"id": "a", "cmd": "x", "attempt": 2**31}),
     ["stages[0].attempt: must be <= 2147483647"]),
    ("attempt_past_int64",
     '{"stages": [{"id": "a", "cmd": "x", "attempt": 1%s}]}' % ("0" * 30),
     ["stages[0].attempt: must be <= 2147483647"]),
    ("exit_code_too_small",
     stages({"id": "a", "cmd": "x", "exit_code": -2**31 - 1}),
     ["stages[0].exit_code: must be >= -2147483648"]),
    ("env_not_string", stages({"id": "a", "cmd": "x", "env": {"SEED": 1}}),
     ["stages[0].env.SEED: must be a string, not an integer"]),
    ("timeout_string", stages({"id": "a", "cmd": "x", "timeout": "1h"}),
     ["stages[0].timeout: must be a number, not a string"]),
    ("bad_id", stages({"id": "../etc", "cmd": "x"}),
     ['stages[0].id: "../etc" is not a valid stage id']),
    ("self_dep", stages({"id": "a", "cmd": "x", "deps": ["a"]}),
     ['stages[0].deps[0]: "a" depends on itself']),
    ("top_level_array", "[]\n",
     ["(top level): must be an object, not an array"]),
    # Scalars at the top level: "null" was "JSON syntax error: success",
    # "true" and "7" without a newline "unexpected end of file".
    ("top_level_null", "null\n",
     ["(top level): must be an object, not null"]),
    ("top_level_null_no_newline", "null",
     ["(top level): must be an object, not null"]),
    ("top_level_true", "true", ["(top level): must be an object, not a "
                                "boolean"]),
    ("top_level_number", "7", ["(top level): must be an object, not an "
                               "integer"]),
    ("stages_missing", '{"version": 1}\n', ["stages: missing"]),
    ("bad_version", '{"version": 2, "stages": []}\n',
     ["version: unsupported version 2"]),
    # A NUL would cut the id and the command short where they become C
    # strings: "a" and "echo one" would run.
    ("nul_in_strings",
     '{"notes": ["x\\u0000"], "stages": [{"id": "a\\u0000/../x",\n'
     ' "cmd": "echo one\\u0000; echo two > two.txt",\n'
     ' "env": {"A": "1\\u0000"}}]}\n',
     ["notes[0]: NUL character (\\u0000) in a string",
      "stages[0].id: NUL character (\\u0000) in a string",
      "stages[0].cmd: NUL character (\\u0000) in a string",
      "stages[0].env.A: NUL character (\\u0000) in a string"]),
    # json-c cuts a key at its NUL: "cmd\u0000x" would read as "cmd".
    ("nul_in_key",
     '{"stages": [{"id": "a", "cmd": "true",\n  "cmd\\u0000x": "rm x"}]}\n',
     ["work_graph.json:2:7: NUL character (\\u0000) in an object key"]),
    # json-c keeps the last of two equal keys: the first value was lost
    # on the next write, and a second "stages" was the one that ran.
    ("duplicate_key",
     '{"stages": [{"id": "a", "cmd": "true",\n'
     '  "notes": "first", "notes": "second"}]}\n',
     ['work_graph.json:2:21: duplicate key "notes" (first at 2:3)']),
    ("duplicate_stages",
     '{"stages": [{"id": "a", "cmd": "true"}],\n "stages": []}\n',
     ['work_graph.json:2:2: duplicate key "stages" (first at 1:2)']),
    ("duplicate_key_escaped",
     '{"stages": [], "\\u0073tages": []}\n',
     ['work_graph.json:1:16: duplicate key "stages" (first at 1:2)']),
    ("running_without_owner",
     stages({"id": "a", "cmd": "x", "status": "running"}),
     ["stages[0].owner: a running stage needs an owner"]),
]


@pytest.fixture
def work(tmp_path):
    (tmp_path / "experiments").mkdir()
    return tmp_path


@pytest.mark.parametrize("name,text,expect", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_graph_is_reported_and_never_rewritten(work, name, text,
                                                        expect):
    path = work / GRAPH
    path.write_text(text)
    before = path.read_bytes()
    st_before = os.stat(path)

    v = sched(work, "validate")
    assert v.returncode == 1, v
    for frag in expect:
        assert frag in v.stderr, (frag, v.stderr)

    # Every command refuses it and leaves it alone.
    for args in (["run"], ["--wait", "--poll", "0.1"], ["--max-stages", "1"],
                 ["status"], ["reset", "a"], ["--dry-run"]):
        r = sched(work, *args)
        assert r.returncode == 1, (args, r)
        assert path.read_bytes() == before, args
    assert os.stat(path).st_ino == st_before.st_ino
    # No stage ran, no lock left behind.
    assert not (work / "runs").exists()
    assert not (work / "locks" / "work_graph.lock").exists()


def test_every_problem_is_reported_in_one_pass(work):
    (work / GRAPH).write_text(stages(
        {"id": "a", "cmd": 1},
        {"id": "a", "cmd": "x", "deps": ["zz"]},
        {"cmd": "x", "status": "nope"}))
    v = sched(work, "validate")
    assert v.returncode == 1
    for frag in ["stages[0].cmd: must be", 'stages[1].id: duplicate id "a"',
                 'stages[1].deps[0]: unknown stage id "zz"',
                 'stages[2]: missing "id"', 'stages[2].status: "nope"',
                 "5 problems"]:
        assert frag in v.stderr, (frag, v.stderr)


def test_valid_graph_validates(work):
    (work / GRAPH).write_text(stages(
        {"id": "prep", "cmd": "true"},
        {"id": "train", "cmd": ["python3", "train.py"], "deps": ["prep"],
         "max_attempts": 3, "timeout": 43200, "env": {"SEED": "1"}}))
    v = sched(work, "validate")
    assert v.returncode == 0, v
    assert "ok (2 stages)" in v.stdout


def test_missing_graph_is_an_error(work):
    r = sched(work, "validate")
    assert r.returncode == 1
    assert "cannot read" in r.stderr
    assert sched(work, "run").returncode == 1


def test_usage_errors_exit_2(work):
    assert sched(work, "--bogus").returncode == 2
    assert sched(work, "frobnicate").returncode == 2
    assert sched(work, "reset").returncode == 2
    assert sched(work, "--max-stages", "x").returncode == 2
    h = sched(work, "--help")
    assert h.returncode == 0
    assert "exit codes" in h.stdout and "--max-stages" in h.stdout


def help_entry(text, opt):
    """The help text of `opt`'s line in --help, wrapped lines joined."""
    m = re.search(r"^  %s +(.*?)\n(?!   )" % re.escape(opt), text, re.M | re.S)
    return " ".join(m.group(1).split()) if m else None


def test_help_lists_every_flag_it_accepts(work):
    h = sched(work, "--help")
    assert h.returncode == 0
    assert re.search(r"^  -h, --help +\S", h.stdout, re.M), h.stdout
    assert re.search(r"^  --version +\S", h.stdout, re.M), h.stdout
    assert sched(work, "-h").stdout == h.stdout
    v = sched(work, "--version")
    assert v.returncode == 0 and v.stdout.startswith("vectur-sched ")


def test_help_says_poll_also_paces_the_stage_lock_checks(work):
    poll = help_entry(sched(work, "--help").stdout, "--poll S")
    assert poll, "no --poll line"
    assert "--wait" in poll and "lock" in poll and "0.5" in poll and "10" in poll, poll
