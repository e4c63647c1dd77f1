"""``etrace_grad`` memory against sequence length: BPTT grows with T, the online rules stay flat.

For each (algorithm, T) the jitted sequence function that ``learner.etrace_grad`` runs is
compiled for inputs of T steps, *without running it* (``learner.etrace_grad_memory`` on
``jax.ShapeDtypeStruct`` sequences: no input is even allocated), and XLA's memory analysis
gives its buffer sizes:

- ``temp``: the working memory (BPTT: the residuals of every step, kept for the backward
  pass; online rules: one step's temporaries, plus a chunk's factors when chunked);
- ``output``: gradients, the carried state (hidden states and, for D-RTRL, the traces) and
  the per-step losses (T float32: 0.4 MiB at T = 100k, the only T-dependent output);
- ``xla`` = temp + output: what the device must hold besides the inputs;
- ``args``: the inputs (the (T, B, n_in) sequence, weights, state); listed, not counted,
  since a stream delivers its inputs step by step.

The model is ``online_vs_bptt.py``'s (``dt.nn.SpikingNet`` recurrent LIF, MSE every step).
A configuration whose xla + args exceeds this machine's RAM (``--ram-gib``, default the
physical memory) is marked ``> RAM``: XLA's plan is reported, but it could not run here.
Everything is compile time (seconds per row); nothing of size T is computed.

Usage::

    python benchmarks/memory.py --n-rec 512 --batch 64 --T 1000 10000 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from _sizes import add_size_args

HERE = os.path.dirname(os.path.abspath(__file__))
ALGOS = ("bptt", "d_rtrl", "d_rtrl_chunk", "es_d_rtrl", "es_d_rtrl_chunk")
MIB = 2**20


def _ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_args(p, n_rec=512, batch=64, n_layers=1)
    p.add_argument("--T", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--chunk", type=int, default=100, help="chunk_size of the *_chunk rows")
    p.add_argument("--ram-gib", type=float, default=None, help="RAM to compare with (default: this machine's)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/memory_<platform>.json)")
    return p


def _learner(a, algo):
    import brainstate
    import jax.numpy as jnp

    import disttrace as dt

    brainstate.random.seed(0)
    net = dt.nn.SpikingNet(a.n_in, a.n_rec, a.n_out, n_layers=a.n_layers, neuron="lif", recurrent=True, tau_out=0.0)
    x0 = jnp.zeros((a.batch, a.n_in))
    if algo == "bptt":
        return dt.compile(net, dt.BPTT, x0, batch_size=a.batch)
    if algo.startswith("es_d_rtrl"):
        return dt.compile(net, dt.ES_D_RTRL, x0, batch_size=a.batch, decay=0.9)
    return dt.compile(net, dt.D_RTRL, x0, batch_size=a.batch)


def _row(a, algo, T, ram_gib):
    import jax
    import jax.numpy as jnp

    row = {"algo": algo, "T": T}
    try:
        learner = _learner(a, algo)

        def step_fn(x, y):
            return jnp.mean((learner(x) - y) ** 2)

        xs = jax.ShapeDtypeStruct((T, a.batch, a.n_in), jnp.float32)
        ys = jax.ShapeDtypeStruct((T, a.batch, a.n_out), jnp.float32)
        t0 = time.perf_counter()
        m = learner.etrace_grad_memory(xs, ys, step_fn=step_fn, chunk_size=a.chunk if algo.endswith("_chunk") else None)
        row.update(compile_s=time.perf_counter() - t0, temp_mib=m["temp"] / MIB, out_mib=m["output"] / MIB,
                   args_mib=m["argument"] / MIB, xla_mib=(m["temp"] + m["output"]) / MIB)
        row["exceeds_ram"] = (m["temp"] + m["output"] + m["argument"]) / 2**30 > ram_gib
    except Exception as e:  # noqa: BLE001 - recorded, the other rows still run
        row.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
    return row


def _table(rows, ram_gib):
    head = f"{'algo':<15} {'T':>7} {'temp MiB':>10} {'out MiB':>9} {'xla MiB':>10} {'args MiB':>10} {'compile s':>9}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['algo']:<15} {r['T']:>7}  ERROR: {r['error'][:90]}")
            continue
        note = f"> RAM ({ram_gib:.0f} GiB): XLA's plan, not runnable here" if r["exceeds_ram"] else ""
        lines.append(f"{r['algo']:<15} {r['T']:>7} {r['temp_mib']:>10.2f} {r['out_mib']:>9.2f} {r['xla_mib']:>10.2f} "
                     f"{r['args_mib']:>10.1f} {r['compile_s']:>9.2f}  {note}".rstrip())
    lines.append("")
    for algo in dict.fromkeys(r["algo"] for r in rows):
        ok = [r for r in rows if r["algo"] == algo and "error" not in r]
        if len(ok) >= 2:
            lo, hi = min(ok, key=lambda r: r["T"]), max(ok, key=lambda r: r["T"])
            losses = 4 * (hi["T"] - lo["T"]) / MIB  # the (T,) float32 per-step losses in the output
            lines.append(f"{algo:<15} T={lo['T']} -> {hi['T']}: temp x{hi['temp_mib'] / max(lo['temp_mib'], 1e-9):.2f}, "
                         f"output {hi['out_mib'] - lo['out_mib']:+.2f} MiB (per-step losses: {losses:+.2f} MiB)")
    return "\n".join(lines)


def main(argv=None):
    a = _parser().parse_args(argv)
    sys.path.insert(0, HERE)
    import jax
    from online_vs_bptt import revision, write_json

    import disttrace

    ram_gib = a.ram_gib if a.ram_gib is not None else _ram_gib()
    dev = jax.devices()[0]
    out = a.out or os.path.join(HERE, "results", f"memory_{dev.platform}.json")
    rows = []
    header = {"device": {"platform": dev.platform, "device_kind": dev.device_kind, "ram_gib": ram_gib},
              "jax_version": jax.__version__, "flags": vars(a), "revision": revision(os.path.dirname(disttrace.__file__)),
              "disttrace_version": getattr(disttrace, "__version__", None),
              "command": ["benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)]}
    for algo in a.algos:
        for T in a.T:
            row = _row(a, algo, T, ram_gib)
            rows.append(row)
            write_json(out, {**header, "complete": False, "rows": rows})
            print(f"  {algo:<15} T={T:<7} " + (f"ERROR {row['error']}" if "error" in row else
                  f"xla {row['xla_mib']:.2f} MiB (temp {row['temp_mib']:.2f}, out {row['out_mib']:.2f}), "
                  f"compile {row['compile_s']:.2f} s"), flush=True)
    table = _table(rows, ram_gib)
    write_json(out, {**header, "complete": True, "rows": rows, "table": table})
    print(f"\ndevice: {dev.platform} / {dev.device_kind}, RAM {ram_gib:.0f} GiB, jax {jax.__version__}")
    print(f"sizes: n_in={a.n_in} n_rec={a.n_rec} n_out={a.n_out} layers={a.n_layers} batch={a.batch} chunk={a.chunk}")
    print(table)
    print(f"\nwrote {out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
