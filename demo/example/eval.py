#!/usr/bin/env python3
"""eval.py — evaluates a checkpoint written by train.py, or summarises
several evaluations.

    python3 eval.py --run runs/train_a          # -> $VECTUR_RUN_DIR/metrics.json
    python3 eval.py --summary runs/eval_a runs/eval_b

The metrics record the md5 of the checkpoint that was evaluated, so anyone
can check later that the file on Drive is the one that was scored.
"""

import argparse
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import batch  # noqa: E402


def evaluate(run, out):
    path = os.path.join(run, "ckpt.json")
    with open(path, "rb") as f:
        raw = f.read()
    ckpt = json.loads(raw)
    if ckpt["step"] != ckpt["steps"]:
        print("eval: %s is not finished (step %d/%d)" % (path, ckpt["step"], ckpt["steps"]))
        return 1
    w = ckpt["weights"]
    loss, n = 0.0, 0
    for k in range(1000, 1004):  # held-out batches
        xs, ys = batch(ckpt["seed"], k)
        for x, y in zip(xs, ys):
            loss += (sum(a * b for a, b in zip(w, x)) - y) ** 2
            n += 1
    metrics = {"run": run, "ckpt_md5": hashlib.md5(raw).hexdigest(), "step": ckpt["step"],
               "eval_loss": loss / n, "resumes": ckpt.get("resumes", [])}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    print("eval: %s  eval loss %.4f  (ckpt md5 %s)" % (run, metrics["eval_loss"],
                                                      metrics["ckpt_md5"]))
    return 0


def summary(dirs, out):
    rows = []
    for d in dirs:
        with open(os.path.join(d, "metrics.json")) as f:
            rows.append(json.load(f))
    best = min(rows, key=lambda m: m["eval_loss"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"runs": rows, "best": best["run"]}, f, indent=1)
        f.write("\n")
    for m in rows:
        print("report: %-14s eval loss %.4f" % (m["run"], m["eval_loss"]))
    print("report: best run is %s" % best["run"])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run dir holding ckpt.json")
    ap.add_argument("--summary", nargs="+", metavar="EVAL_DIR")
    ap.add_argument("--out", default=os.environ.get("VECTUR_RUN_DIR", "runs/eval"))
    args = ap.parse_args()
    if args.summary:
        return summary(args.summary, args.out)
    if not args.run:
        ap.error("give --run DIR or --summary DIR...")
    return evaluate(args.run, args.out)


if __name__ == "__main__":
    sys.exit(main())
