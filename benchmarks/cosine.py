"""Learning quality: cosine of each rule's gradient to BPTT's, and the bytes of its state.

The model is the issue's recurrent LIF network, ``dt.nn.SpikingNet(5, 24, 2,
neuron="lif", recurrent=True)`` (one recurrent LIF layer of 24, a leaky readout of 2
with tau 5), float64, T=100 steps, batch ``--batch``, standard-normal inputs and
targets, the mean-over-time MSE loss. Per seed (model init and data), every rule's
``etrace_grad`` over the whole sequence is compared with BPTT's by the cosine of all
parameters' gradients together; the table shows the mean over ``--seeds`` and the
range.

Rules: D-RTRL, ES-D-RTRL (decay 0.9), Hybrid (budget = every D-RTRL trace but the
largest, the recurrent weight's, which goes to ES-D-RTRL), SnAp-2, SnAp-3, e-prop
(symmetric, no filter; and with kappa = the readout's decay exp(-1/5)), OSTL
(recurrent; feedforward), UORO (the mean gradient over ``--uoro-keys`` projection keys,
one ``vmap`` of the functional step over keys), RTRL.

State bytes: everything the learner carries besides the model's own hidden and other
states (``learner.init()`` minus ``hidden``/``aux``: traces, influence matrix, step
count). SnAp stores its masked influence matrix densely (RTRL's bytes). BPTT keeps no
state but stores the whole sequence's activations (not counted here).

Usage::

    python benchmarks/cosine.py                      # the issue's table
    python benchmarks/cosine.py --seeds 0 --T 20     # smoke

Writes ``benchmarks/results/cosine_<platform>.json`` (or ``--out``) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from stream_throughput import revision, write_json  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--uoro-keys", type=int, default=10)
    p.add_argument("--out", default=None)
    return p


def _model():
    import disttrace as dt

    return dt.nn.SpikingNet(5, 24, 2, neuron="lif", recurrent=True)


def _state_bytes(state) -> int:
    import jax
    import jax.numpy as jnp

    rest = state._replace(hidden={}, aux={})
    return sum(math.prod(jnp.shape(x)) * jnp.dtype(jnp.result_type(x)).itemsize for x in jax.tree.leaves(rest))


def _specs(batch: int):
    import disttrace as dt

    kappa = math.exp(-1 / 5.0)
    return {
        "D-RTRL": dt.D_RTRL(),
        "ES-D-RTRL": dt.ES_D_RTRL(0.9),
        "Hybrid": "hybrid",  # budget set per compiled graph (see _compile)
        "SnAp-2": dt.SnAp(2),
        "SnAp-3": dt.SnAp(3),
        "e-prop": dt.EProp(),
        f"e-prop κ={kappa:.3f}": dt.EProp(kappa_filter_decay=kappa),
        "OSTL recurrent": dt.OSTLRecurrent(),
        "OSTL feedforward": dt.OSTLFeedforward(),
        "UORO": dt.UORO(projection_key=0),
        "RTRL": dt.RTRL(),
    }


def _compile(spec, x0, batch, seed):
    import brainstate
    import jax.numpy as jnp

    import disttrace as dt

    brainstate.random.seed(seed)
    model = _model()
    mse = lambda out, y: jnp.mean((out - y) ** 2)
    if spec == "hybrid":
        probe = dt.compile(model, dt.D_RTRL, x0, batch_size=batch)
        sizes = sorted(dt.algorithms.param_trace_bytes(probe.graph, op) for op in probe.graph.ops if op.groups)
        spec = dt.Hybrid(memory_budget=sum(sizes[:-1]), decay=0.9)
        brainstate.random.seed(seed)
        model = _model()
    return dt.compile(model, spec, x0, batch_size=batch, loss_fn=mse)


def _grad(learner, xs, ys, n_keys: int | None):
    import jax
    import jax.numpy as jnp

    if n_keys is None:
        step_fn = lambda x, y: learner.loss_fn(learner(x), y)
        return learner.etrace_grad(xs, ys, step_fn=step_fn)
    # UORO: the mean over projection keys, the key in the state (one vmap of the functional step)
    params, state0 = learner.params(), learner.init()

    def run(key):
        state = state0._replace(m=state0.m._replace(key=key))

        def body(carry, xy):
            st, acc = carry
            st, _, g = learner.step(st, params, *xy)
            return (st, jax.tree.map(jnp.add, acc, g)), None

        zero = jax.tree.map(jnp.zeros_like, params)
        (_, total), _ = jax.lax.scan(body, (state, zero), (xs, ys))
        return jax.tree.map(lambda a: a / xs.shape[0], total)

    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(n_keys)])
    return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.jit(jax.vmap(run))(keys))


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    import brainstate
    import jax

    jax.config.update("jax_enable_x64", True)
    brainstate.environ.set(precision=64)
    import jax.numpy as jnp

    import disttrace as dt
    from disttrace.testing import cosine

    dev = jax.devices()[0]
    out = a.out or os.path.join(HERE, "results", f"cosine_{dev.platform}.json")
    rows = {name: {"cosines": [], "state_bytes": None, "seconds": []} for name in _specs(a.batch)}
    x0 = jnp.zeros((a.batch, 5), jnp.float64)
    for seed in a.seeds:
        kx, ky = jax.random.split(jax.random.PRNGKey(1000 + seed))
        xs = jax.random.normal(kx, (a.T, a.batch, 5), jnp.float64)
        ys = jax.random.normal(ky, (a.T, a.batch, 2), jnp.float64)
        ref = _grad(_compile(dt.BPTT, x0, a.batch, seed), xs, ys, None)
        for name, spec in _specs(a.batch).items():
            t0 = time.perf_counter()
            learner = _compile(spec, x0, a.batch, seed)
            g = _grad(learner, xs, ys, a.uoro_keys if name == "UORO" else None)
            rows[name]["seconds"].append(time.perf_counter() - t0)
            rows[name]["cosines"].append(cosine(g, ref))
            rows[name]["state_bytes"] = _state_bytes(learner.init())
            print(f"seed {seed} {name}: cosine {rows[name]['cosines'][-1]:.4f}", file=sys.stderr, flush=True)
    base = rows["D-RTRL"]["state_bytes"]
    table = ["| rule | cosine to BPTT (mean) | min–max | state bytes | × D-RTRL |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        c = r["cosines"]
        r["mean"] = sum(c) / len(c)
        label = f"{name} (mean of {a.uoro_keys} keys)" if name == "UORO" else name
        table.append(
            f"| {label} | {r['mean']:.4f} | {min(c):.4f}–{max(c):.4f} | {r['state_bytes']} | {r['state_bytes'] / base:.2f} |"
        )
    best = [n for n, r in rows.items() if n != "RTRL" and r["mean"] >= 0.97 and r["state_bytes"] <= 4 * base]
    payload = {
        "benchmark": "cosine",
        "model": "SpikingNet(5, 24, 2, neuron='lif', recurrent=True), float64",
        "T": a.T,
        "batch": a.batch,
        "seeds": a.seeds,
        "uoro_keys": a.uoro_keys,
        "device": str(dev),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "revision": revision(),
        "rows": rows,
        "at_least_0.97_within_4x_d_rtrl_memory": best,
        "complete": True,
    }
    write_json(out, payload)
    print("\n".join(table))
    print(f"\nrules other than RTRL with mean cosine >= 0.97 at <= 4x D-RTRL's state: {best or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
