"""test_man_pages.py — the hand-written man pages in man/ stay in step with
the programs they describe, render cleanly, and `make install` puts them in
place.

- Options: every option printed by a program's --help is documented in its
  page and every option the page documents is printed by --help. An option
  is "documented" when it heads a `.TP` paragraph (`.BI \\-\\-graph " PATH"`,
  `.BI "\\-o cache_dir=" DIR`); `-o NAME` mount options count by name.
  Options only a page may carry are listed in MAN_ONLY, and each must really
  be missing from --help, so the list shrinks when --help catches up.
- Defaults: where --help says "default X", the page's paragraph for that
  option says X too.
- Metavariables: an option both show with a value (`-o cache_dir=DIR`,
  `--graph PATH`) has the same metavariable in both.
- Exit codes: vectur-sched's codes in --help are the page's EXIT STATUS tags.
- The checker itself: removing any option paragraph from a page, adding an
  unknown option or changing a default makes it complain.
- Rendering: `groff -man -ww -z` and `man --warnings -l` print nothing.
- Install: `make install DESTDIR=... PREFIX=/usr` puts the pages in
  usr/share/man/man1 (and `man -w` finds them there), next to the binaries.

Binaries from $VECTUR_BIN (default <repo>/bin); standard library + pytest."""

import gzip
import os
import re
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(REPO, "man")
BIN = os.environ.get("VECTUR_BIN", os.path.join(REPO, "bin"))
PROGRAMS = {
    "vectur-mount": os.path.join(BIN, "vectur-mount"),
    "vectur-sched": os.path.join(BIN, "vectur-sched"),
    "vectur-setup": os.path.join(REPO, "mount-helpers", "vectur-setup"),
}
# Options a page documents although --help does not print them (each checked
# to be really absent from --help).
MAN_ONLY = {}


def page_path(prog):
    return os.path.join(MAN, prog + ".1")


def help_text(prog):
    path = PROGRAMS[prog]
    if not os.access(path, os.X_OK):
        pytest.skip("%s is not built (make)" % path)
    r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---- parsing --help ---------------------------------------------------------------

def option_names(text):
    """The options named in an option column or a .TP tag: '-o NAME' for
    mount options, else every -x / --long token (values and metavariables
    such as FILE or =STR are not options)."""
    names = set()

    def mount_opt(m):
        names.add("-o " + m.group(1))
        return " "
    text = re.sub(r"(?<![\w-])-o\s+([a-z_]+)", mount_opt, text)
    names.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))
    return names


def help_entries(text):
    """[(option names, help text)] for each option line of --help: a line
    whose first non-blank character is '-'; its option column ends at two
    spaces; lines indented deeper that do not start with '-' continue it."""
    entries, cur = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("-"):
            head, body = re.match(r"(.*?)(?:\s{2,}(.*))?$", stripped).groups()
            cur = [option_names(head), (body or "").strip(), indent]
            entries.append(cur)
        elif cur is not None and stripped and indent > cur[2]:
            cur[1] += " " + stripped
        else:
            cur = None
    return [(names, body) for names, body, _ in entries]


def help_heads(text):
    """The option column of each option line of --help."""
    return [re.match(r"(.*?)(?:\s{2,}|$)", line.strip()).group(1)
            for line in text.splitlines() if line.strip().startswith("-")]


def metavars(text):
    """{option: metavariable} for the options of an option column or a .TP
    tag that take one: '-o cache_dir=DIR', '--graph PATH', '--port=P'."""
    out = {}
    for m in re.finditer(r"(?<![\w-])-o\s+([a-z_]+)=([A-Z][A-Z_]*)(?!\w)", text):
        out["-o " + m.group(1)] = m.group(2)
    for m in re.finditer(r"(?<![\w-])(--[a-z][\w-]*)[ =]([A-Z][A-Z:_]*)(?!\w)", text):
        out[m.group(1)] = m.group(2)
    return out


def help_default(body):
    """The default a help line states ("(default: 10G)", "; default 22"), or
    None."""
    m = re.search(r"\bdefault:?\s+([^;,()]+?)\s*(?:[;,()]|$)", body)
    return m.group(1) if m else None


# ---- parsing the man page ----------------------------------------------------------

ALTERNATING = {"BR", "BI", "IB", "IR", "RB", "RI"}


def roff_args(args):
    """A macro's arguments: blank-separated, "quoted" ones may hold blanks."""
    return [q.replace('""', '"') if q or not w else w
            for q, w in re.findall(r'"((?:[^"]|"")*)"?|(\S+)', args)]


def deroff(line):
    """The plain text of one roff line: macro arguments joined as the
    macro would print them, font changes and escapes dropped."""
    if line.startswith((".", "'")):
        macro, _, args = line[1:].strip().partition(" ")
        if macro in ("B", "I", "SM", "SB") or macro in ALTERNATING:
            words = roff_args(args)
            line = ("" if macro in ALTERNATING else " ").join(words)
        else:
            return ""
    line = re.sub(r"\\f(\[[^]]*\]|\(..|.)", "", line)
    line = re.sub(r"\\\((em|en)", "-", line)
    line = re.sub(r"\\\((lq|rq|dq)", '"', line)
    line = re.sub(r"\\\(\w\w", "?", line)
    for esc, plain in (("\\-", "-"), ("\\&", ""), ("\\c", ""), ("\\|", ""),
                       ("\\e", "\\"), ("\\ ", " ")):
        line = line.replace(esc, plain)
    return line


def man_entries(lines):
    """[(option names, body text, first line, end line)] for each .TP
    paragraph whose tag is an option. A paragraph ends at the next .TP,
    .SH, .SS, .PP, .LP or .P."""
    entries = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != ".TP" or i + 1 >= len(lines):
            i += 1
            continue
        tag = deroff(lines[i + 1]).strip()
        j = i + 2
        while j < len(lines) and not re.match(r"\.(TP|SH|SS|PP|LP|P)\b", lines[j]):
            j += 1
        if tag.startswith("-"):
            body = " ".join(deroff(l) for l in lines[i + 2:j])
            entries.append((option_names(tag), " ".join(body.split()), i, j))
        i = j
    return entries


def section_tags(lines, section):
    """The .TP tags of one .SH section, as plain text."""
    tags, inside = [], False
    for i, line in enumerate(lines):
        if line.startswith(".SH"):
            inside = deroff(".B " + line[3:]).strip().strip('"') == section
        elif inside and line.strip() == ".TP" and i + 1 < len(lines):
            tags.append(deroff(lines[i + 1]).strip())
    return tags


# ---- the comparison -----------------------------------------------------------------

def problems(prog, help_txt, page_txt):
    """Every difference between --help and the page, as sentences."""
    out = []
    lines = page_txt.splitlines()
    h = help_entries(help_txt)
    m = man_entries(lines)
    in_help = set().union(*(names for names, _ in h))
    in_man = set().union(*(names for names, _, _, _ in m)) if m else set()
    allowed = MAN_ONLY.get(prog, set())
    for opt in sorted(in_help - in_man):
        out.append("%s --help prints %s; man/%s.1 does not document it" % (prog, opt, prog))
    for opt in sorted(in_man - in_help - allowed):
        out.append("man/%s.1 documents %s; %s --help does not print it" % (prog, opt, prog))
    for opt in sorted(allowed & in_help):
        out.append("%s --help now prints %s: drop it from MAN_ONLY" % (prog, opt))
    help_meta, man_meta = {}, {}
    for head in help_heads(help_txt):
        help_meta.update(metavars(head))
    for _, _, start, _ in m:
        man_meta.update(metavars(deroff(lines[start + 1])))
    for opt in sorted(set(help_meta) & set(man_meta)):
        if help_meta[opt] != man_meta[opt]:
            out.append("%s --help gives %s the metavariable %s; man/%s.1 gives it %s"
                       % (prog, opt, help_meta[opt], prog, man_meta[opt]))
    for names, body in h:
        default = help_default(body)
        if default is None:
            continue
        pat = r"(?<![\w])%s(?![\w])" % re.escape(" ".join(default.split()))
        for opt in names:
            bodies = [b for n, b, _, _ in m if opt in n]
            if bodies and not any(re.search(pat, b, re.I) for b in bodies):
                out.append("%s --help gives %s the default %r; man/%s.1 does not say it"
                           % (prog, opt, default, prog))
    if prog == "vectur-sched":
        codes = set(re.findall(r"^  (\d+)  ", help_txt, re.M))
        tags = set(section_tags(lines, "EXIT STATUS"))
        if codes != tags:
            out.append("vectur-sched --help exit codes %s, man page EXIT STATUS %s"
                       % (sorted(codes), sorted(tags)))
    return out


def listed_after(text, lead):
    """The comma-separated names that follow `lead` in plain text, up to the
    period that ends the list."""
    m = re.search(re.escape(lead) + r"\s*(.*?)\.(?:\s|$)", " ".join(text.split()))
    return [w.strip() for w in m.group(1).split(",")] if m else None


def other_mount_options(help_txt, page_txt):
    """vectur-mount's lists of mount options it passes on to FUSE and ignores
    (fstab), as (--help's, the page's)."""
    def help_list(label):
        m = re.search(r"^ +%s: +(.*?)(?:\n\n|\n(?! {8,})|\Z)" % re.escape(label), help_txt,
                      re.M | re.S)
        return [w.strip() for w in " ".join(m.group(1).split()).split(",")] if m else None
    page = " ".join(deroff(l) for l in page_txt.splitlines())
    return ((help_list("passed to FUSE"), help_list("ignored (fstab only)")),
            (listed_after(page, "Passed on to FUSE:"),
             listed_after(page, "systemd care about them:")))


# ---- the tests ----------------------------------------------------------------------

@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_page_documents_exactly_the_help_options(prog):
    page = open(page_path(prog)).read()
    assert problems(prog, help_text(prog), page) == []


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_help_parser_sees_the_options(prog):
    # Guards the parser: an empty parse would make the comparison vacuous.
    names = set().union(*(n for n, _ in help_entries(help_text(prog))))
    expect = {"vectur-mount": {"--help", "--config", "--check", "--sync", "-f", "-s",
                               "-o cache_dir", "-o persist", "-o use_trash", "-o debug"},
              "vectur-sched": {"--graph", "--lock-dir", "--wait", "--force", "--lock-ttl"},
              "vectur-setup": {"--rclone", "--rclone-token-paste", "--install", "--launch",
                               "--copy", "--sched-args", "-n", "--dry-run", "-h"}}[prog]
    assert expect <= names, sorted(expect - names)


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_checker_catches_a_removed_option(prog):
    help_txt = help_text(prog)
    lines = open(page_path(prog)).read().splitlines()
    entries = man_entries(lines)
    assert len(entries) >= 5
    for names, _, start, end in entries:
        others = set().union(*(n for n, _, s, _ in entries if s != start))
        gone = names - others
        if not gone:
            continue  # documented twice (-d, -o debug and -o debug[=BOOL])
        mutated = "\n".join(lines[:start] + lines[end:]) + "\n"
        found = problems(prog, help_txt, mutated)
        for opt in gone:
            if opt in MAN_ONLY.get(prog, set()):
                continue
            assert any(" %s;" % opt in p for p in found), (opt, found)


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_checker_catches_an_unknown_option(prog):
    page = open(page_path(prog)).read()
    page = page.replace("\n.SH EXIT STATUS\n",
                        "\n.TP\n.BI \\-\\-no-such-option \" N\"\nMade up.\n.SH EXIT STATUS\n", 1)
    assert any("--no-such-option" in p for p in problems(prog, help_text(prog), page))


def test_mount_page_lists_the_fuse_and_fstab_options_help_lists():
    in_help, in_page = other_mount_options(help_text("vectur-mount"),
                                           open(page_path("vectur-mount")).read())
    assert None not in in_help and len(in_help[0]) >= 10 and len(in_help[1]) >= 10, in_help
    assert in_page == in_help


def mount_page_problems_with(old, new):
    """problems() of vectur-mount's page with `old` (which it holds) replaced."""
    page = open(page_path("vectur-mount")).read()
    assert old in page
    return problems("vectur-mount", help_text("vectur-mount"), page.replace(old, new))


def test_checker_catches_a_changed_default():
    found = mount_page_problems_with("Default: 10G.", "Default: 20G.")
    assert any("-o cache_max_size" in p and "'10G'" in p for p in found), found


def test_checker_catches_a_changed_metavariable():
    found = mount_page_problems_with('.BI "\\-o cache_dir=" DIR', '.BI "\\-o cache_dir=" PATH')
    assert any("-o cache_dir" in p and "PATH" in p for p in found), found


def test_checker_catches_a_missing_exit_code():
    page = open(page_path("vectur-sched")).read()
    mutated = re.sub(r"\.TP\n\.B 6\n.*?(?=\.PP)", "", page, count=1, flags=re.S)
    assert mutated != page
    assert any("exit codes" in p for p in problems("vectur-sched", help_text("vectur-sched"),
                                                   mutated))


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (make deps)")
@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_page_renders_without_groff_warnings(prog):
    r = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", page_path(prog)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db not installed (make deps)")
@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_page_renders_with_man(prog):
    r = subprocess.run(["man", "--warnings", "-l", page_path(prog)], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = re.sub(r".\x08", "", r.stdout)
    assert "NAME" in text and "SYNOPSIS" in text and prog in text


def test_make_install_puts_man_pages_in_place(tmp_path):
    """`make install DESTDIR=... PREFIX=/usr` with the programs already built
    (`-o all`: this test must not rebuild, and BIN= installs the binaries
    under test, as with VECTUR_BIN=bin-san)."""
    for path in PROGRAMS.values():
        if not os.access(path, os.X_OK):
            pytest.skip("%s is not built (make)" % path)
    dest = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-C", REPO, "-o", "all", "install", "DESTDIR=" + str(dest),
                        "PREFIX=/usr", "BIN=" + BIN], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    man1 = dest / "usr" / "share" / "man" / "man1"
    for prog in PROGRAMS:
        plain, gz = man1 / (prog + ".1"), man1 / (prog + ".1.gz")
        assert plain.exists() or gz.exists(), sorted(os.listdir(man1))
        got = plain.read_bytes() if plain.exists() else gzip.decompress(gz.read_bytes())
        assert got == open(page_path(prog), "rb").read()
        installed = plain if plain.exists() else gz
        assert stat.S_IMODE(installed.stat().st_mode) == 0o644
        exe = dest / "usr" / "bin" / prog
        assert os.access(exe, os.X_OK), exe
        if shutil.which("man"):
            w = subprocess.run(["man", "--manpath=" + str(dest / "usr" / "share" / "man"),
                                "-w", prog], capture_output=True, text=True, timeout=30)
            assert w.stdout.strip() == str(installed), w.stdout + w.stderr
    for doc in ("README.md", "MOUNT.md", "SCHEDULER.md", "MOUNT-HELPERS.md"):
        assert (dest / "usr" / "share" / "doc" / "vectur" / doc).exists(), doc
