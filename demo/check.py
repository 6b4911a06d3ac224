#!/usr/bin/env python3
"""check.py — the demo's look at "Google Drive" itself: it reads the Drive
emulator's control endpoints (/_emu/files, /_emu/versions), never a mount,
and the files as a mount shows them, and prints one "ok|FAIL<TAB>claim" line
per claim (proof) or a single value (step). Standard library only.

    check.py step  URL FOLDER STAGE
        the step held by the newest live FOLDER/runs/STAGE/ckpt.json on Drive
        ("none" if there is none yet)
    check.py proof URL FOLDER CODE_DIR REF_DIR KILLED_STAGE
        the claims demo/run.sh makes, checked
"""

import hashlib
import json
import sys
import urllib.request


class Drive:
    def __init__(self, url, folder):
        self.url = url
        self.folder = folder
        self.all = json.loads(self.get("/_emu/files"))["files"]
        self.byid = {f["id"]: f for f in self.all}
        self.root = json.loads(self.get("/_emu/info"))["root_id"]
        self._versions = None

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return r.read()

    def path(self, f):
        """FOLDER-relative path of a file, or None if outside FOLDER."""
        parts = []
        while True:
            parts.append(f["name"])
            parents = f.get("parents") or []
            if not parents:
                return None
            if parents[0] == self.root:
                break
            f = self.byid.get(parents[0])
            if f is None:
                return None
        parts.reverse()
        if parts[0] != self.folder:
            return None
        return "/".join(parts[1:])

    def live(self):
        """path -> [live files with that path] (more than one = a duplicate)."""
        out = {}
        for f in self.all:
            if f.get("trashed") or f.get("deleted"):
                continue
            p = self.path(f)
            if p is not None:
                out.setdefault(p, []).append(f)
        return out

    def versions(self, fid):
        if self._versions is None:
            self._versions = {f["id"]: f["versions"]
                              for f in json.loads(self.get("/_emu/versions"))["files"]}
        return self._versions.get(fid, [])

    def version_bytes(self, fid, i):
        return self.get("/_emu/versions/%s/%d" % (fid, i))

    def latest_bytes(self, fid):
        return self.version_bytes(fid, len(self.versions(fid)) - 1)


def cmd_step(url, folder, stage):
    d = Drive(url, folder)
    hits = d.live().get("runs/%s/ckpt.json" % stage, [])
    if not hits:
        print("none")
        return 0
    newest = max(hits, key=lambda f: f.get("modifiedTime", ""))
    try:
        print(json.loads(d.latest_bytes(newest["id"]))["step"])
    except (ValueError, KeyError):
        print("unreadable")
    return 0


def cmd_proof(url, folder, code, ref, killed):
    d = Drive(url, folder)
    live = d.live()

    def out(ok, what):
        print("%s\t%s" % ("ok" if ok else "FAIL", what))

    graph = json.load(open(code + "/experiments/work_graph.json"))
    st = {s["id"]: s for s in graph["stages"]}
    out(all(s.get("status") == "done" for s in st.values()),
        "every stage is done (%s)" % ", ".join("%s=%s" % (k, s.get("status"))
                                               for k, s in st.items()))
    k = st.get(killed, {})
    out((k.get("attempt") or 0) == 2,
        "%s was reclaimed once after the preemption (attempt %s)" % (killed, k.get("attempt")))
    others = [t for t in st if t != killed]
    out(all(st[t].get("attempt") == 1 for t in others),
        "every other stage ran exactly once (%s)"
        % ", ".join("%s=%s" % (t, st[t].get("attempt")) for t in others))

    for t in sorted(s for s in st if s.startswith("train_")):
        raw = open("%s/runs/%s/ckpt.json" % (code, t), "rb").read()
        ckpt = json.loads(raw)
        want = json.load(open("%s/runs/%s/ckpt.json" % (ref, t)))
        if t == killed:
            froms = [r["from_step"] for r in ckpt.get("resumes", [])]
            out(any(0 < s < ckpt["steps"] for s in froms),
                "%s resumed from its checkpoint (from step %s), not from scratch"
                % (t, ", ".join(map(str, froms)) or "-"))
        out(ckpt["step"] == want["step"] and ckpt["weights"] == want["weights"]
            and ckpt["losses"] == want["losses"],
            "%s: final weights and loss curve bit-identical to an uninterrupted run" % t)
        hits = live.get("runs/%s/ckpt.json" % t, [])
        e = t.replace("train_", "eval_")
        metrics = json.load(open("%s/runs/%s/metrics.json" % (code, e)))
        md5s = sorted(set(f.get("md5Checksum") for f in hits))
        out(len(hits) == 1 and md5s[0] == hashlib.md5(raw).hexdigest() == metrics["ckpt_md5"],
            "%s: ckpt.json on Drive (md5 %s) = read back = what %s scored"
            % (t, "/".join(str(m) for m in md5s) or "missing", e))

    dups = sorted(p for p, fs in live.items() if len(fs) > 1)
    out(not dups, "no path exists twice on Drive (duplicates: %s)"
        % (", ".join(dups) if dups else "none"))

    # Every version of every checkpoint Drive ever stored, deleted files included.
    n, torn, back = 0, [], []
    for f in d.all:
        if f["name"] != "ckpt.json":
            continue
        last = 0
        for i, _ in enumerate(d.versions(f["id"])):
            n += 1
            try:
                step = json.loads(d.version_bytes(f["id"], i))["step"]
            except (ValueError, KeyError):
                torn.append("%s#%d" % (f["id"], i))
                continue
            if step < last:
                back.append("%s#%d" % (f["id"], i))
            last = step
    out(n > 0 and not torn, "all %d checkpoint versions Drive ever stored are complete JSON"
        " (torn: %d)" % (n, len(torn)))
    out(not back, "no checkpoint on Drive ever went back to an older step (%d did)" % len(back))
    summary = json.load(open(code + "/runs/report/summary.json"))
    out(len(summary["runs"]) == 2, "the report covers both runs (best: %s)" % summary["best"])
    return 0


def main(argv):
    if len(argv) == 5 and argv[1] == "step":
        return cmd_step(*argv[2:])
    if len(argv) == 7 and argv[1] == "proof":
        return cmd_proof(*argv[2:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
