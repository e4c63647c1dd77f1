"""Time of one online step per layer family: D-RTRL and ES-D-RTRL against BPTT.

Each family is a small model built from ``disttrace.nn`` layers (a stateless layer is
followed by an element-wise leaky integrator so it has a hidden state):

- ``linear``: Linear(I, N) -> leaky integrator;
- ``conv2d``: Conv2d((S, S, C), F, 3) -> leaky integrator;
- ``layernorm``: LayerNorm(I) -> leaky integrator;
- ``lif``: Linear(I, N) -> LIF(N) -> Linear readout;
- ``gru`` / ``lstm``: GRUCell / LSTMCell(I, N) -> Linear readout;
- ``lora``: LoRA(I, r, N) on a frozen Linear base -> leaky integrator.

Per (family, algorithm): the per-step time is the steady wall time of
``learner.etrace_grad`` over ``--T`` steps (``d_rtrl_chunk``: D-RTRL with
``chunk_size=--chunk``) (mean of ``--repeats`` calls after the first,
``jax.block_until_ready``) divided by T; ``x BPTT`` is its ratio to BPTT's. A family a
layer cannot be built for (e.g. LoRA missing) is recorded with its error.

Usage::

    python benchmarks/layers.py --batch 16 --n 128 --T 100
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback

import brainstate
import jax
import jax.numpy as jnp

import disttrace as dt

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = {"bptt": dt.BPTT, "d_rtrl": dt.D_RTRL, "d_rtrl_chunk": dt.D_RTRL, "es_d_rtrl": dt.ES_D_RTRL}


class _Leaky(brainstate.nn.Module):
    """``layers`` then ``h = 0.9 h + tanh(y)``."""

    def __init__(self, out_shape, *layers):
        super().__init__()
        self.layers, self.out_shape = list(layers), tuple(out_shape)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, *self.out_shape)))

    def update(self, x):
        for layer in self.layers:
            x = layer(x)
        self.h.value = 0.9 * self.h.value + jnp.tanh(x)
        return self.h.value


def _families(a):
    n, i, s = a.n, a.n_in, a.spatial
    nn = dt.nn
    fams = {
        "linear": (lambda: _Leaky((n,), nn.Linear(i, n)), (i,)),
        "conv2d": (lambda: _Leaky((s, s, 8), nn.Conv2d((s, s, 4), 8, 3)), (s, s, 4)),
        # a norm between a trace op and a hidden state would mix the op's neurons (the
        # compiler rejects that), so the norm acts on the input here
        "layernorm": (lambda: _Leaky((i,), nn.LayerNorm(i)), (i,)),
        "lif": (lambda: brainstate.nn.Sequential(nn.Linear(i, n), nn.LIF(n, tau=5.0),
                             nn.Linear(n, 10)), (i,)),
        "gru": (lambda: brainstate.nn.Sequential(nn.GRUCell(i, n), nn.Linear(n, 10)), (i,)),
        "lstm": (lambda: brainstate.nn.Sequential(nn.LSTMCell(i, n), nn.Linear(n, 10)), (i,)),
    }
    if hasattr(nn, "LoRA"):
        fams["lora"] = (
            lambda: _Leaky((n,), nn.LoRA(i, 8, n, base_module=nn.Linear(i, n, param_type=brainstate.State))),
            (i,),
        )
    return fams


def _time(make, in_shape, algo, a):
    brainstate.random.seed(0)
    model = make()
    x0 = jnp.zeros((a.batch, *in_shape))
    learner = dt.compile(model, ALGOS[algo], x0, batch_size=a.batch)
    xs = jax.random.normal(jax.random.PRNGKey(0), (a.T, a.batch, *in_shape))
    out = learner.predict(xs[:1])
    ys = jnp.zeros((a.T, *out.shape[1:]))
    step_fn = lambda x, y: jnp.mean((learner(x) - y) ** 2)  # one function: etrace_grad caches its jit by it
    chunk = a.chunk if algo == "d_rtrl_chunk" else None
    run = lambda: learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size=chunk)
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - t0)
    per_seq = sum(times) / len(times)
    return {"per_step_ms": 1e3 * per_seq / a.T, "compile_s": first - per_seq, "times_s": times}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="neurons per layer")
    p.add_argument("--n-in", type=int, default=64)
    p.add_argument("--spatial", type=int, default=8, help="conv input is (S, S, 4)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=50, help="chunk_size of the d_rtrl_chunk rows")
    p.add_argument("--families", nargs="*", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = jax.devices()[0]
    rows = []
    for fam, (make, in_shape) in _families(a).items():
        if a.families and fam not in a.families:
            continue
        for algo in ALGOS:
            row = {"family": fam, "algo": algo}
            try:
                row.update(_time(make, in_shape, algo, a))
            except Exception as e:  # recorded, the other families still run
                row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
    bptt = {r["family"]: r.get("per_step_ms") for r in rows if r["algo"] == "bptt"}
    lines = [f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}; "
             f"n={a.n} n_in={a.n_in} batch={a.batch} T={a.T}",
             "| family | algo | per step ms | x BPTT | compile s |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['algo']} | error: {r['error'][:60]} | | |")
            continue
        ratio = r["per_step_ms"] / bptt[r["family"]] if bptt.get(r["family"]) else float("nan")
        lines.append(f"| {r['family']} | {r['algo']} | {r['per_step_ms']:.3f} | {ratio:.2f} | {r['compile_s']:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = a.out or os.path.join(HERE, "results", f"layers_{device.platform}.json")
    with open(out, "w") as f:
        json.dump({"device": str(device), "jax": jax.__version__, "args": vars(a), "rows": rows, "table": table}, f,
                  indent=1)
    return rows


if __name__ == "__main__":
    main()
