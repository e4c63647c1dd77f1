"""Scaling of the sharded online step: throughput vs devices, trace memory vs network size.

Net: ``dt.nn.SpikingNet(n_in, n, n_out, recurrent=True)`` (one recurrent LIF layer and a
leaky readout), MSE loss, Adam, one ``disttrace.train.make_train_step`` per
stream step.

**Throughput** (``--part throughput``): stream-steps per second (batch × steps / s) of
the sharded step on ``(data, model)`` meshes of 1..8 devices, data-parallel
(``Dx1``), model-parallel (``1xM``) and mixed. Batches are placed on the mesh before
the timed loop, so the number is the step itself. On a CPU host the "devices" are
``--xla_force_host_platform_device_count`` fake devices that share the host's cores:
the numbers show the partitioning overhead and the collectives, not a speed-up the
cores could not give.

**Memory** (``--part memory``): per-device bytes of the training state for a D-RTRL
learner at network size ``n`` (batch ``--batch``), computed from the partition rules
(``PartitionRules.bytes_per_device`` on a ``jax.sharding.AbstractMesh``, so meshes
larger than the host work), and the largest ``n`` whose state fits ``--device-gib``
per device. The per-device state is a quadratic in ``n``; its coefficients come from
the rules at three small sizes and are checked exactly against the rules at every
table size. Where the mesh fits the host's devices, the step is also compiled (no
data allocated) and XLA's memory analysis gives the step's peak per device
(arguments + temporaries; the output aliases the donated input); scaling the state
quadratic by the peak/state ratio at the largest table size gives a second, tighter
"largest n" (the trace term dominates there).

Usage::

    python benchmarks/scaling.py                        # both parts, 8 fake CPU devices
    python benchmarks/scaling.py --part memory --mem-n 512 1024 2048 4096 8192 --batch 64

Results go to ``results/scaling_<platform>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = ("d_rtrl", "es_d_rtrl")
GIB = 2**30


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("throughput", "memory", "all"), default="all")
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices (XLA flag, CPU only)")
    p.add_argument("--n-rec", type=int, default=256, help="throughput: neurons")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-in", type=int, default=64)
    p.add_argument("--n-out", type=int, default=16)
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--layouts", nargs="+", default=["1x1", "2x1", "4x1", "8x1", "1x2", "1x4", "1x8", "2x4"])
    p.add_argument("--steps", type=int, default=30, help="timed steps per layout")
    p.add_argument("--repeats", type=int, default=3, help="timed loops per layout (the best is reported)")
    p.add_argument("--mem-n", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    p.add_argument("--mem-layouts", nargs="+", default=["1x1", "8x1", "64x1", "1x8", "2x4", "8x8"])
    p.add_argument("--device-gib", type=float, default=80.0, help="memory per device, GiB")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/scaling_<platform>.json)")
    return p


def _layout(text: str) -> tuple[int, int]:
    d, m = text.lower().split("x")
    return int(d), int(m)


# ---------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------
def _learner(a, n, algo):
    import brainstate
    import jax.numpy as jnp

    import disttrace as dt

    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(a.n_in, n, a.n_out, recurrent=True)
    kw = {"decay": 0.9} if algo == "es_d_rtrl" else {}
    spec = dt.ES_D_RTRL if algo == "es_d_rtrl" else dt.D_RTRL
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    return dt.compile(net, spec, jnp.zeros((a.batch, a.n_in)), batch_size=a.batch, loss_fn=mse, **kw)


def _batch_shapes(a):
    import jax
    import jax.numpy as jnp

    return (jax.ShapeDtypeStruct((a.batch, a.n_in), jnp.float32), jax.ShapeDtypeStruct((a.batch, a.n_out), jnp.float32))


# ---------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------
def throughput(a, optimizer) -> list[dict]:
    import jax
    import numpy as np

    import disttrace as dt
    import disttrace.distributed as dd

    rows = []
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    n_data = a.steps + 1
    xs = np.asarray((jax.random.uniform(k1, (n_data, a.batch, a.n_in)) < 0.2).astype(np.float32))
    ys = np.asarray(jax.random.normal(k2, (n_data, a.batch, a.n_out)))
    for algo in a.algos:
        learner = _learner(a, a.n_rec, algo)
        for text in a.layouts:
            data, model = _layout(text)
            row = {"algo": algo, "layout": text, "data": data, "model": model, "devices": data * model}
            if data * model > jax.device_count():
                row["error"] = f"needs {data * model} devices, have {jax.device_count()}"
                rows.append(row)
                continue
            try:
                mesh = dd.make_mesh(data, model, devices=jax.devices()[: data * model])
                rules = dt.train.partition_rules(learner, optimizer, mesh, (xs[0], ys[0]))
                state = dt.train.init_train_state(learner, optimizer, rules)
                step = dt.train.make_train_step(learner, optimizer, rules)
                batches = [dd.shard_batch(rules, xs[t], ys[t]) for t in range(n_data)]
                t0 = time.perf_counter()
                state, loss = step(state, *batches[0])
                jax.block_until_ready(state)
                first = time.perf_counter() - t0
                loops = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    for t in range(1, n_data):
                        state, loss = step(state, *batches[t])
                    jax.block_until_ready(state)
                    loops.append(time.perf_counter() - t0)
                best = min(loops)
                row.update(
                    step_ms=1e3 * best / a.steps, stream_steps_per_s=a.batch * a.steps / best,
                    loop_s=loops, compile_s=max(first - best / a.steps, 0.0),
                    state_mib_per_device=rules.bytes_per_device() / 2**20,
                    trace_mib_per_device=rules.bytes_per_device("learner_state/traces/") / 2**20,
                    final_loss=float(loss),
                )
            except Exception as e:  # noqa: BLE001 - recorded in the JSON
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print(f"  {algo:<10} {text:>5}  " + (row["error"] if "error" in row else
                  f"{row['stream_steps_per_s']:10.0f} stream-steps/s  {row['step_ms']:7.2f} ms/step"), flush=True)
    return rows


def _throughput_table(rows) -> str:
    head = (f"{'algo':<10} {'layout':>6} {'dev':>4} {'stream-steps/s':>15} {'ms/step':>8} {'x 1x1':>6} "
            f"{'trace MiB/dev':>14} {'compile s':>10}")
    lines = [head, "-" * len(head)]
    base = {r["algo"]: r.get("stream_steps_per_s") for r in rows if r["layout"] == "1x1" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['algo']:<10} {r['layout']:>6} {r['devices']:>4}  ERROR: {r['error'][:80]}")
            continue
        ratio = r["stream_steps_per_s"] / base[r["algo"]] if base.get(r["algo"]) else float("nan")
        lines.append(f"{r['algo']:<10} {r['layout']:>6} {r['devices']:>4} {r['stream_steps_per_s']:15.0f} "
                     f"{r['step_ms']:8.2f} {ratio:6.2f} {r['trace_mib_per_device']:14.2f} {r['compile_s']:10.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def _fit_quadratic(points):
    """Exact quadratic through three (n, bytes) points: returns (a, b, c) as floats."""
    import numpy as np

    ns = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    return tuple(float(c) for c in np.linalg.solve(np.vander(ns, 3), ys))


def _largest_n(coef, cap, multiple):
    """Largest n (a multiple of ``multiple``) with a·n² + b·n + c <= cap."""
    a_, b_, c_ = coef
    root = (-b_ + math.sqrt(b_ * b_ - 4 * a_ * (c_ - cap))) / (2 * a_)
    n = int(root) // multiple * multiple
    while a_ * n * n + b_ * n + c_ > cap:
        n -= multiple
    return n


def _xla_peak(learner, optimizer, mesh, a):
    """Per-device peak of the compiled step: arguments + temporaries (output aliased)."""
    import jax

    import disttrace as dt

    batch = _batch_shapes(a)
    rules = dt.train.partition_rules(learner, optimizer, mesh, batch)
    step = dt.train.make_train_step(learner, optimizer, rules)
    shapes = jax.eval_shape(lambda: dt.train.init_train_state(learner, optimizer))
    ma = step.lower(shapes, *batch).compile().memory_analysis()
    return ma.argument_size_in_bytes + ma.temp_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes


def memory(a, optimizer) -> dict:
    import jax
    from jax.sharding import AbstractMesh

    import disttrace as dt
    import disttrace.distributed as dd

    layouts = [_layout(t) for t in a.mem_layouts]
    lcm = math.lcm(*(m for _, m in layouts))
    fit_n = [lcm * k for k in (1, 2, 3)]
    cap = a.device_gib * GIB
    batch = _batch_shapes(a)
    per_n = {}
    for n in sorted(set(fit_n) | set(a.mem_n)):
        learner = _learner(a, n, "d_rtrl")
        entry = {}
        for (d, m), text in zip(layouts, a.mem_layouts):
            rules = dt.train.partition_rules(learner, optimizer, AbstractMesh((d, m), ("data", "model")), batch)
            entry[text] = {"state": rules.bytes_per_device(), "trace": rules.bytes_per_device("learner_state/traces/")}
            if d * m <= jax.device_count() and n in a.mem_n:
                mesh = dd.make_mesh(d, m, devices=jax.devices()[: d * m])
                entry[text]["xla_peak"] = _xla_peak(learner, optimizer, mesh, a)
        per_n[n] = entry
        del learner
        print(f"  n={n}: " + ", ".join(f"{t} {v['state'] / GIB:.3f} GiB" for t, v in entry.items()), flush=True)

    summary = {}
    for (d, m), text in zip(layouts, a.mem_layouts):
        coef = _fit_quadratic([(n, per_n[n][text]["state"]) for n in fit_n])
        for n in a.mem_n:  # the quadratic reproduces the rules exactly at every table size
            pred = coef[0] * n * n + coef[1] * n + coef[2]
            assert abs(pred - per_n[n][text]["state"]) <= 1e-6 * per_n[n][text]["state"] + 64, (text, n)
        out = {"devices": d * m, "state_coef": coef, "largest_n_state": _largest_n(coef, cap, m)}
        top = max(a.mem_n)
        if "xla_peak" in per_n[top][text]:
            # the trace dominates at large n: scale the state quadratic by the compiled step's
            # peak/state ratio at the largest table size
            ratio = per_n[top][text]["xla_peak"] / per_n[top][text]["state"]
            out["xla_peak_over_state"] = ratio
            out["largest_n_xla_peak"] = _largest_n(tuple(ratio * c for c in coef), cap, m)
        summary[text] = out
    return {"per_n": {str(n): v for n, v in per_n.items() if n in a.mem_n}, "largest": summary, "device_gib": a.device_gib,
            "fit_n": fit_n}


def _memory_tables(mem, a) -> str:
    layouts = a.mem_layouts
    lines = [f"D-RTRL state per device (GiB), batch {a.batch}; trace = (B, 1, n_in+n, n) + readout; XLA:CPU step peak "
             "in brackets"]
    head = f"{'n':>6} " + " ".join(f"{t:>20}" for t in layouts)
    lines += [head, "-" * len(head)]
    for n in a.mem_n:
        cells = []
        for t in layouts:
            e = mem["per_n"][str(n)][t]
            cell = f"{e['state'] / GIB:.3f}"
            if "xla_peak" in e:
                cell += f" [{e['xla_peak'] / GIB:.3f}]"
            cells.append(f"{cell:>20}")
        lines.append(f"{n:>6} " + " ".join(cells))
    lines.append("")
    lines.append(f"largest n that fits {a.device_gib:g} GiB per device (batch {a.batch})")
    head = f"{'layout':>7} {'devices':>8} {'state only':>11} {'XLA:CPU step peak':>18} {'peak/state':>11}"
    lines += [head, "-" * len(head)]
    for t in layouts:
        s = mem["largest"][t]
        xla = f"{s['largest_n_xla_peak']:>18} {s['xla_peak_over_state']:>11.2f}" if "largest_n_xla_peak" in s else \
            f"{'-':>18} {'-':>11}"
        lines.append(f"{t:>7} {s['devices']:>8} {s['largest_n_state']:>11} {xla}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    a = _parser().parse_args(argv)
    if "jax" not in sys.modules and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={a.devices}".strip()
    import jax
    import optax

    optimizer = optax.adam(1e-3)
    dev = jax.devices()[0]
    device = {"platform": dev.platform, "device_kind": dev.device_kind, "n_devices": jax.device_count(),
              "cpu_count": os.cpu_count(), "jax": jax.__version__}
    print(f"devices: {jax.device_count()} x {dev.device_kind} ({dev.platform}), host cores {os.cpu_count()}")
    result = {"device": device, "args": vars(a)}
    t0 = time.perf_counter()
    if a.part in ("throughput", "all"):
        rows = throughput(a, optimizer)
        result["throughput"] = rows
        result["throughput_table"] = _throughput_table(rows)
        print(f"\nthroughput: n={a.n_rec}, batch {a.batch}, n_in {a.n_in}, n_out {a.n_out}, Adam, best of "
              f"{a.repeats} x {a.steps} steps\n" + result["throughput_table"])
    if a.part in ("memory", "all"):
        mem = memory(a, optimizer)
        result["memory"] = mem
        result["memory_table"] = _memory_tables(mem, a)
        print("\n" + result["memory_table"])
    result["wall_s"] = time.perf_counter() - t0
    out = a.out or os.path.join(HERE, "results", f"scaling_{dev.platform}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
