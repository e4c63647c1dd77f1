"""Stream throughput: one online step per dispatch vs a block of K steps per dispatch.

A stream worker's throughput is the product's throughput. Three ways to run the same
online updates of ``dt.nn.SpikingNet(n_in, n_rec, n_out)`` (D-RTRL by default; softmax
cross-entropy on random labels, Bernoulli(0.2) input spikes, Adam):

- ``single``: ``Trainer.step(x_t, y_t)`` per step, each step's batch coming from the host
  (one Python dispatch per step: the loop of a stream worker today);
- ``block``: ``Trainer.step_block(xs, ys)`` per block of ``--block`` K steps from the host
  (one dispatch and one transfer per K steps, the K updates in one ``lax.scan``);
- ``floor``: the pure compute floor: the same jitted scan (``make_block_step``) over all
  ``--steps`` steps in ONE call, the data already on the device (no Python loop, no
  transfer).

A record is one step of one row: records/s = steps x batch / seconds. Each mode gets a
fresh Trainer (same seed), a warm-up call (compilation; not timed), then ``--repeats``
timed runs of ``--steps`` steps each (``jax.block_until_ready`` on the state at the end);
the table shows the median and the best. The non-finite policy is the Trainer's default
(``skip``), as a worker would run it (``--nonfinite ignore`` for the unguarded step).

Usage::

    python benchmarks/stream_throughput.py                       # the issue's size (lead's run)
    python benchmarks/stream_throughput.py --n-rec 8 --batch 4 --steps 64 --block 8 --repeats 1  # smoke

Writes ``benchmarks/results/stream_throughput_<platform>.json`` (or ``--out``) after each
mode (``"complete": false`` until the end) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("single", "block", "floor")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-in", type=int, default=40)
    p.add_argument("--n-rec", type=int, default=128)
    p.add_argument("--n-out", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--block", type=int, default=32, help="K: steps per block (block mode)")
    p.add_argument("--steps", type=int, default=2048, help="steps per timed run (a multiple of --block)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--algorithm", default="d_rtrl", choices=("d_rtrl", "es_d_rtrl"))
    p.add_argument("--nonfinite", default="skip", choices=("skip", "raise", "ignore"))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/stream_throughput_<platform>.json)")
    return p


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` atomically (``path.tmp`` then a rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def revision() -> dict | None:
    """The checkout's git commit and whether it has local changes (None outside one)."""
    try:
        rev = subprocess.run(["git", "-C", HERE, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30)
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def _trainer(a):
    import brainstate
    import jax.numpy as jnp
    import optax

    import disttrace as dt

    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(a.n_in, a.n_rec, a.n_out)
    algo = {"d_rtrl": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL}[a.algorithm]
    learner = dt.compile(net, algo, jnp.zeros((a.batch, a.n_in)), batch_size=a.batch, loss_fn=dt.train.cross_entropy)
    example = (jnp.zeros((a.batch, a.n_in)), jnp.zeros((a.batch,), jnp.int32))
    return dt.train.Trainer(learner, optax.adam(1e-3), example, nonfinite=a.nonfinite)


def _data(a, n_steps: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    xs = (rng.random((n_steps, a.batch, a.n_in)) < 0.2).astype(np.float32)
    ys = rng.integers(0, a.n_out, (n_steps, a.batch)).astype(np.int32)
    return xs, ys


def _run_mode(a, mode: str) -> dict:
    """Times one mode: warm-up (compile), then ``--repeats`` runs of ``--steps`` steps."""
    import jax

    import disttrace as dt

    trainer = _trainer(a)
    k, n = a.block, a.steps
    xs, ys = _data(a, n, seed=1)
    t0 = time.perf_counter()
    if mode == "single":
        def run():
            for t in range(n):
                trainer.step(xs[t], ys[t])
            jax.block_until_ready(trainer.state)

        wx, wy = _data(a, 3, seed=0)
        for t in range(3):
            trainer.step(wx[t], wy[t])
        jax.block_until_ready(trainer.state)
    elif mode == "block":
        def run():
            for s in range(0, n, k):
                trainer.step_block(xs[s : s + k], ys[s : s + k])
            jax.block_until_ready(trainer.state)

        trainer.step_block(*_data(a, k, seed=0))
        jax.block_until_ready(trainer.state)
    else:  # floor: the scan over all n steps, one call, data on the device
        rules = trainer.rules  # the Trainer was given an example batch: the rules have one
        block = dt.train.make_block_step(trainer.learner, trainer.optimizer, rules, nonfinite=a.nonfinite)
        dx, dy = jax.block_until_ready(dt.train.shard_block(rules, xs, ys))
        state = {"s": jax.block_until_ready(block(trainer.state, dx, dy)[0])}  # warm-up: compiles the scan

        def run():
            state["s"], losses = block(state["s"], dx, dy)
            jax.block_until_ready((state["s"], losses))

    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    records = n * a.batch
    med = statistics.median(times)
    return {"mode": mode, "steps": n, "block": k if mode == "block" else (n if mode == "floor" else 1),
            "times_s": times, "median_s": med, "records_per_s": records / med,
            "best_records_per_s": records / min(times), "warmup_s": warmup_s}


def _table(rows: list[dict]) -> str:
    by = {r["mode"]: r for r in rows if "error" not in r}
    lines = [f"{'mode':<8} {'K':>6} {'records/s':>12} {'best':>12} {'x single':>9} {'floor/x':>8}",
             "-" * 60]
    single = by.get("single", {}).get("records_per_s")
    floor = by.get("floor", {}).get("records_per_s")
    for r in rows:
        if "error" in r:
            lines.append(f"{r['mode']:<8} ERROR {r['error']}")
            continue
        rate = r["records_per_s"]
        vs_single = f"{rate / single:9.2f}" if single else f"{'-':>9}"
        vs_floor = f"{floor / rate:8.2f}" if floor else f"{'-':>8}"
        lines.append(f"{r['mode']:<8} {r['block']:>6} {rate:12.0f} {r['best_records_per_s']:12.0f} {vs_single} {vs_floor}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    for name in ("n_in", "n_rec", "n_out", "batch", "block", "steps", "repeats"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive int; got {getattr(a, name)}")
    if a.steps % a.block:
        p.error(f"--steps must be a multiple of --block ({a.block}); got {a.steps}")
    import jax

    dev = jax.devices()[0]
    out = a.out or os.path.join(HERE, "results", f"stream_throughput_{dev.platform}.json")
    header = {
        "device": {"platform": dev.platform, "device_kind": dev.device_kind, "cpu_count": os.cpu_count(),
                   "machine": platform.machine(), "python": platform.python_version()},
        "jax_version": jax.__version__, "flags": vars(a), "revision": revision(),
        "command": ["benchmarks/stream_throughput.py", *(sys.argv[1:] if argv is None else argv)],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    rows: list[dict] = []

    def save(complete: bool) -> None:
        write_json(out, {**header, "complete": complete, "rows": rows, "table": _table(rows)})

    save(False)
    for mode in a.modes:
        try:
            row = _run_mode(a, mode)
        except Exception as e:  # noqa: BLE001 - recorded, the other modes still run
            row = {"mode": mode, "error": f"{type(e).__name__}: {e}"}
        rows.append(row)
        save(False)
        print(f"  {mode}: " + (row["error"] if "error" in row else f"{row['records_per_s']:.0f} records/s"), flush=True)
    save(True)
    print()
    print(f"SpikingNet({a.n_in}, {a.n_rec}, {a.n_out}) {a.algorithm}, batch {a.batch}, {a.steps} steps x {a.repeats}, "
          f"nonfinite={a.nonfinite}, {dev.platform}")
    print(_table(rows))
    print(f"\nwrote {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
