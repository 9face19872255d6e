"""SIGKILL soak: one training killed many times at random moments, resumed after each kill,
compared bitwise with an uninterrupted run of the same config.

  python scripts/sigkill_soak.py --experiment swiss_roll --kills 20 [--seed 0] [--out FILE]
  python scripts/sigkill_soak.py --experiment dead_leaves --kills 20

The kill moments are drawn from the seeded generator, spread over the whole run (sorted
uniform points of training progress); each is either a random 0-30 ms after that step's
batch was asked for (mid-step) or a random 0-30 ms after the next checkpoint's
asynchronous write began (mid-write). The experiment runs in a child
process (``python -c CHILD``) that kills itself there; the kill is a real SIGKILL. After
every kill all checkpoints orbax lists must restore (none corrupt). After the last kill the
command runs to the end; its final train state (parameters, EMA, optimiser state, step,
key) must equal the uninterrupted run's bitwise, and so must ``K``. Prints a JSON summary
(and writes it to ``--out``); exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Small configs that checkpoint often, so a random moment often falls inside a write.
RUNS = {
    "swiss_roll": [
        "--preset", "small", "--config.train.steps=300", "--config.train.checkpoint_every=20",
        "--config.train.log_every=20", "--config.eval.num_test=200",
        "--config.eval.num_figure_samples=100",
    ],
    "dead_leaves": [
        "--preset", "small", "--config.train.steps=60", "--config.train.checkpoint_every=5",
        "--config.train.log_every=5",
    ],
}  # fmt: skip

CHILD = """
import os, random, signal, sys, threading, time
import orbax.checkpoint as ocp
from dpm_jax import runner
import importlib

mode, at, delay = os.environ["SOAK_MODE"], int(os.environ["SOAK_AT"]), float(os.environ["SOAK_DELAY"])

def die_later():
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()

original_fit, original_save = runner.fit, ocp.CheckpointManager.save

def fit(**kwargs):
    batch_fn = kwargs["batch_fn"]
    def faulty_batch_fn(step):
        if mode == "step" and step == at:
            die_later()
        return batch_fn(step)
    kwargs["batch_fn"] = faulty_batch_fn
    return original_fit(**kwargs)

def save(self, step, *args, **kwargs):
    out = original_save(self, step, *args, **kwargs)
    if mode == "write" and step == at:
        die_later()
    return out

runner.fit = fit
ocp.CheckpointManager.save = save
importlib.import_module("experiments." + sys.argv[1]).main(sys.argv[2:])
"""


def _run(experiment: str, workdir: Path, env_extra: dict | None = None, child: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    args = RUNS[experiment]
    if child:
        cmd = [sys.executable, "-c", CHILD, experiment, "--workdir", str(workdir), *args]
    else:
        cmd = [sys.executable, "-m", f"experiments.{experiment}", "--workdir", str(workdir), *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)


def _steps(experiment: str) -> tuple[int, int]:
    args = dict(a.removeprefix("--config.").split("=") for a in RUNS[experiment] if "=" in a)
    return int(args["train.steps"]), int(args["train.checkpoint_every"])


def _check_checkpoints(experiment: str, workdir: Path) -> tuple[list[int], bool]:
    """(listed steps, whether every one restores) for the workdir's checkpoints."""
    code = f"""
import json, sys
import jax, orbax.checkpoint as ocp
from dpm_jax import checkpoints
from pathlib import Path
m = checkpoints.checkpoint_manager(Path({str(workdir)!r}))
steps, ok = sorted(m.all_steps()), True
for s in steps:
    try:
        state = m.restore(s)
        leaves = jax.tree.leaves(state)
        ok &= bool(leaves) and all(bool(jax.numpy.all(jax.numpy.isfinite(x))) for x in leaves
                                    if jax.numpy.issubdtype(x.dtype, jax.numpy.floating))
    except Exception as e:
        print(repr(e), file=sys.stderr); ok = False
print(json.dumps([steps, ok]))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    if proc.returncode:
        return [], False
    steps, ok = json.loads(proc.stdout.strip().splitlines()[-1])
    return steps, ok


def _final_state_equal(a: Path, b: Path) -> bool:
    code = f"""
import jax, numpy as np
from dpm_jax import checkpoints
from pathlib import Path
def last(w):
    m = checkpoints.checkpoint_manager(Path(w))
    return m.latest_step(), m.restore(m.latest_step())
(sa, x), (sb, y) = last({str(a)!r}), last({str(b)!r})
lx, ly = jax.tree.leaves(x), jax.tree.leaves(y)
same = sa == sb and len(lx) == len(ly) and all(
    np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(lx, ly))
print("SAME" if same else "DIFFERENT")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return proc.returncode == 0 and proc.stdout.strip().endswith("SAME")


def soak(experiment: str, kills: int, seed: int, root: Path) -> dict:
    rng = np.random.default_rng(seed)
    num_steps, every = _steps(experiment)
    start = time.time()
    straight, killed = root / "straight", root / "killed"
    proc = _run(experiment, straight, child=False)
    if proc.returncode:
        raise RuntimeError(f"uninterrupted run failed:\n{proc.stderr[-3000:]}")
    # Kill moments spread over the whole run: sorted random points of training progress,
    # each a step (mid-step kill) or the next checkpoint's write (mid-write kill), never
    # behind the latest checkpoint (the resumed run must still reach it).
    moments = np.sort(rng.uniform(0, num_steps, size=kills))
    events, failures, latest = [], [], 0
    for i, moment in enumerate(moments):
        mode = "write" if rng.random() < 0.5 else "step"
        if mode == "write":
            at = max(int(np.ceil(moment / every)), latest // every + 1) * every
        else:
            at = max(int(moment), latest)
        delay = float(rng.uniform(0.0, 0.03))
        env = {"SOAK_MODE": mode, "SOAK_AT": str(at), "SOAK_DELAY": f"{delay:.4f}"}
        proc = _run(experiment, killed, env)
        leftovers = list((killed / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
        steps, ok = _check_checkpoints(experiment, killed)
        event = {
            "kill": i + 1,
            "mode": mode,
            "at": at,
            "delay_s": round(delay, 4),
            "returncode": proc.returncode,
            "write_in_progress": bool(leftovers),
            "checkpoints": steps,
            "all_restore": ok,
        }
        events.append(event)
        if proc.returncode not in (-signal.SIGKILL, 0):
            failures.append(f"kill {i + 1}: exit {proc.returncode}: {proc.stderr[-1500:]}")
        if not ok:
            failures.append(f"kill {i + 1}: a listed checkpoint does not restore")
        latest = max(steps, default=0)
        if proc.returncode == 0 or latest >= num_steps:  # done: start over for the next kills
            shutil.rmtree(killed)
            latest = 0
    proc = _run(experiment, killed, child=False)
    if proc.returncode:
        failures.append(f"final resume: exit {proc.returncode}: {proc.stderr[-1500:]}")
    same_state = _final_state_equal(straight, killed)
    k = [json.loads((w / "results.json").read_text()).get("K") for w in (straight, killed)]
    if not same_state:
        failures.append("final train state differs from the uninterrupted run")
    if k[0] != k[1]:
        failures.append(f"K differs: {k}")
    sigkills = sum(e["returncode"] == -signal.SIGKILL for e in events)
    return {
        "experiment": experiment,
        "args": RUNS[experiment],
        "seed": seed,
        "kills_scheduled": kills,
        "sigkills_delivered": sigkills,
        "killed_during_checkpoint_write": sum(e["write_in_progress"] for e in events),
        "resumes_ok": sum(e["returncode"] in (-signal.SIGKILL, 0) for e in events),
        "corrupt_checkpoints": sum(not e["all_restore"] for e in events),
        "final_state_bitwise_equal": same_state,
        "K_uninterrupted": k[0],
        "K_killed": k[1],
        "wall_seconds": round(time.time() - start, 1),
        "failures": failures,
        "events": events,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=sorted(RUNS), required=True)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sigkill_soak_") as tmp:
        summary = soak(args.experiment, args.kills, args.seed, Path(tmp))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
