#!/usr/bin/env python3
"""train.py — a tiny stand-in for a training script, written the way real
ones are: it knows nothing about Drive, locks or preemption. It fits a small
linear model with deterministic "minibatches", saves a checkpoint after every
step to runs/<stage>/ckpt.json (via a tmp file + os.replace, the usual
careful idiom) and, when started again, resumes from that checkpoint.

Because the data of step k depends only on (seed, k), a run that was killed
and resumed ends with exactly the same weights as a run that never stopped:
that is how the demo proves that no progress was lost.

    python3 train.py --seed 1 --steps 24 [--out runs/train_a]

Environment: VECTUR_RUN_DIR (set by vectur-sched; default output dir),
VECTUR_ATTEMPT, DEMO_STEP_SECONDS (simulated compute per step, default 0.4).
"""

import argparse
import json
import os
import random
import sys
import time

DIM = 8


def batch(seed, step, n=32):
    """The minibatch of one step: a pure function of (seed, step)."""
    rng = random.Random(seed * 1000003 + step)
    true_w = [((i * 7 + seed) % 5) - 2.0 for i in range(DIM)]
    xs, ys = [], []
    for _ in range(n):
        x = [rng.uniform(-1, 1) for _ in range(DIM)]
        y = sum(a * b for a, b in zip(true_w, x)) + rng.gauss(0, 0.05)
        xs.append(x)
        ys.append(y)
    return xs, ys


def sgd_step(w, xs, ys, lr):
    grad = [0.0] * DIM
    loss = 0.0
    for x, y in zip(xs, ys):
        err = sum(a * b for a, b in zip(w, x)) - y
        loss += err * err
        for i in range(DIM):
            grad[i] += 2 * err * x[i]
    n = len(xs)
    return [wi - lr * g / n for wi, g in zip(w, grad)], loss / n


def save(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--out", default=os.environ.get("VECTUR_RUN_DIR", "runs/train"))
    args = ap.parse_args()
    delay = float(os.environ.get("DEMO_STEP_SECONDS", "0.4"))
    attempt = int(os.environ.get("VECTUR_ATTEMPT", "1"))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ckpt.json")
    state = None
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        pass
    if state and state.get("seed") == args.seed and state.get("steps") == args.steps:
        print("train: attempt %d resumes from checkpoint at step %d/%d"
              % (attempt, state["step"], args.steps), flush=True)
        state.setdefault("resumes", []).append({"attempt": attempt, "from_step": state["step"]})
        save(path, state)
    else:
        print("train: attempt %d starts from scratch (%d steps)" % (attempt, args.steps),
              flush=True)
        state = {"seed": args.seed, "steps": args.steps, "step": 0, "lr": args.lr,
                 "weights": [0.0] * DIM, "losses": [], "resumes": []}

    while state["step"] < args.steps:
        xs, ys = batch(args.seed, state["step"])
        state["weights"], loss = sgd_step(state["weights"], xs, ys, args.lr)
        state["losses"].append(loss)
        state["step"] += 1
        time.sleep(delay)  # the GPU's share of the work
        save(path, state)
        print("train: step %2d/%d  loss %.4f" % (state["step"], args.steps, loss), flush=True)
    print("train: done, final loss %.4f" % state["losses"][-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
