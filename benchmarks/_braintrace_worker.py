"""Braintrace side of ``online_vs_bptt.py``: one (algo, T) configuration per process.

Run with an interpreter that has braintrace 0.2.8 (+ brainstate 0.6) installed, such as the
one ``bash benchmarks/setup_braintrace.sh`` makes (``online_vs_bptt.py`` finds it by itself)::

    benchmarks/.venv-braintrace/bin/python benchmarks/_braintrace_worker.py --algo d_rtrl --T 100 ...

Builds a 3-layer recurrent LIF network of the same sizes as ``disttrace.nn.SpikingNet``
(own LIF dynamics: soft reset, state = membrane before reset, fast-sigmoid surrogate,
memoryless linear readout), times ``learner.etrace_grad`` (wrapped in
``brainstate.transform.jit``, since braintrace does not jit it itself) and prints one
JSON line on stdout (prefixed ``RESULT ``). Errors are reported as JSON too.

``bptt`` here is plain ``brainstate.transform.grad`` over a ``for_loop`` of the same model.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import traceback
import warnings

from _sizes import add_size_args


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--algo", required=True, choices=["bptt", "d_rtrl", "es_d_rtrl"])
    p.add_argument("--T", type=int, required=True)
    add_size_args(p, n_rec=64, batch=16, n_layers=3)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    row = {"lib": "braintrace", "algo": a.algo, "T": a.T}
    try:
        row.update(_run(a))
    except Exception as e:  # noqa: BLE001 - reported, not raised
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()[-4000:]
    print("RESULT " + json.dumps(row), flush=True)


def make_call(a):
    """``(run, xs, ys)``: braintrace's jitted ``etrace_grad`` (or BPTT ``grad``) of the
    benchmark model for the sizes in ``a`` (``algo``, ``T``, ``n_in``, ``n_rec``, ``n_out``,
    ``batch``, ``n_layers``) and its Bernoulli(0.2) inputs and normal targets;
    ``run(xs, ys)`` returns the gradients and the loss. ``chunked_vs_bptt.py`` times it
    beside disttrace in one process."""
    warnings.filterwarnings("ignore")
    import brainstate
    import braintrace
    import jax
    import jax.numpy as jnp

    def _normal(fan_in):
        return lambda shape, **kw: brainstate.random.normal(0.0, 1.0 / math.sqrt(fan_in), shape)

    @jax.custom_jvp
    def spike(x):
        return (x > 0).astype(x.dtype)

    @spike.defjvp
    def _spike_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return spike(x), dx / (1.0 + 4.0 * jnp.abs(x)) ** 2

    class LIF(brainstate.nn.Module):
        def __init__(self, n_in, n_rec, tau=10.0, v_th=1.0):
            super().__init__()
            self.n_rec, self.v_th, self.alpha = n_rec, v_th, math.exp(-1.0 / tau)
            # same init as disttrace: N(0, 1/fan_in)
            self.fc = braintrace.nn.Linear(n_in + n_rec, n_rec, b_init=None,
                                           w_init=_normal(n_in + n_rec))

        def init_state(self, batch_size=None, **kwargs):
            self.V = brainstate.HiddenState(jnp.zeros((batch_size, self.n_rec)))

        def update(self, x):
            v = self.V.value
            s_prev = spike((v - self.v_th) / self.v_th)
            v = self.alpha * (v - self.v_th * s_prev) + self.fc(jnp.concatenate([x, s_prev], axis=-1))
            self.V.value = v
            return spike((v - self.v_th) / self.v_th)

    class Net(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [LIF(a.n_in if i == 0 else a.n_rec, a.n_rec) for i in range(a.n_layers)]
            self.readout = braintrace.nn.Linear(a.n_rec, a.n_out, b_init=None, w_init=_normal(a.n_rec))

        def update(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.readout(x)

    brainstate.random.seed(0)
    B, T = a.batch, a.T
    key = jax.random.PRNGKey(1)
    xs = (jax.random.uniform(key, (T, B, a.n_in)) < 0.2).astype(jnp.float32)
    ys = jax.random.normal(jax.random.PRNGKey(2), (T, B, a.n_out))
    jax.block_until_ready((xs, ys))
    net = Net()

    if a.algo == "bptt":
        brainstate.nn.init_all_states(net, batch_size=B)
        weights = net.states(brainstate.ParamState)

        def loss_seq(xs, ys):
            def body(x, y):
                return jnp.mean((net(x) - y) ** 2)
            return brainstate.transform.for_loop(body, xs, ys).mean()

        @brainstate.transform.jit
        def run(xs, ys):
            return brainstate.transform.grad(loss_seq, weights, return_value=True)(xs, ys)
    else:
        alg = braintrace.D_RTRL if a.algo == "d_rtrl" else braintrace.ES_D_RTRL
        opts = {} if a.algo == "d_rtrl" else {"decay_or_rank": 0.9}
        learner = braintrace.compile(net, alg, jnp.zeros((B, a.n_in)), batch_size=B, **opts)

        def step_fn(x, y):
            return jnp.mean((learner(x) - y) ** 2)

        @brainstate.transform.jit
        def run(xs, ys):
            return learner.etrace_grad(xs, ys, step_fn=step_fn, return_value=True)

    return run, xs, ys


def _run(a):
    import brainstate
    import braintrace
    import jax
    from _memory import device_peak

    run, xs, ys = make_call(a)
    base = _rss_mib()
    t0 = time.perf_counter()
    jax.block_until_ready(run(xs, ys))
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(xs, ys))
        times.append(time.perf_counter() - t0)
    per_seq = sum(times) / len(times)
    out = {"first_s": first, "per_seq_s": per_seq, "compile_s": max(first - per_seq, 0.0),
           "times_s": times, "peak_rss_mib": _rss_mib(), "base_rss_mib": base,
           "peak_mib": _rss_mib() - base, "mem_source": "ru_maxrss-baseline",
           "versions": {"braintrace": braintrace.__version__, "brainstate": brainstate.__version__,
                        "jax": jax.__version__}}
    device_peak(out)
    try:  # XLA compiled memory analysis (temp + output bytes), as in online_vs_bptt.py
        ma = run.lower(xs, ys).compile().memory_analysis()
        out.update(xla_temp_mib=ma.temp_size_in_bytes / 2**20, xla_out_mib=ma.output_size_in_bytes / 2**20,
                   xla_arg_mib=ma.argument_size_in_bytes / 2**20,
                   xla_mib=(ma.temp_size_in_bytes + ma.output_size_in_bytes) / 2**20)
    except Exception as e:  # noqa: BLE001
        out["xla_error"] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    sys.exit(main())
