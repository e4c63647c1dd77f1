"""Chunked D-RTRL against BPTT in one process, alternating, medians (issue 14's CPU target).

Rows run in separate processes move with a shared machine's load; this script builds
every learner in one process and times them in turns, each round in a new random order
(seeded), so a drift in the load weighs on all of them alike and no algorithm always runs
right after the same one (a call that follows one which just freed a large working set,
or ran a different program, is slower: rotating a fixed order kept each one's predecessor
and biased a comparison of two equal programs by 5 %). Reported per algorithm: min and median
wall seconds of one ``learner.etrace_grad`` call (``jax.block_until_ready`` on the
gradients), the ratios of the medians to the first algorithm's (BPTT by default),
the median of the per-round ratios (each round's algorithms ran back to back), and
the process CPU time of a call (all threads), which other jobs on the machine move
less than the wall time, and the minor page faults of a call (the first touch of
memory the allocator got fresh from the kernel: with glibc's malloc, XLA's per-call
working set, see ``benchmarks/README.md``). Also the matrix-product FLOPs one call
executes (the optimised HLO of ``learner.etrace_grad_compiled``, or of braintrace's jitted
call, loops counted by their trip counts: ``_hlo_flops.dot_flops``) and their ratio to the
first algorithm's: the arithmetic floor of a time ratio.

Model: ``online_vs_bptt.py``'s (``dt.nn.SpikingNet``, recurrent LIF, MSE every step,
Bernoulli(0.2) inputs); defaults are the issue's CPU size (one layer, H = 512, batch
64, T = 200, chunk 100).

Usage::

    python benchmarks/chunked_vs_bptt.py --rounds 15
    python benchmarks/chunked_vs_bptt.py --algos bptt d_rtrl_chunk d_rtrl_chunk:50 --rounds 15
    # glibc keeping freed memory (disttrace.allocator.keep_freed_memory), or jemalloc
    python benchmarks/chunked_vs_bptt.py --rounds 20 --keep-freed-memory
    LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
        python benchmarks/chunked_vs_bptt.py --rounds 20

An algorithm ``d_rtrl_chunk:U`` (``es_d_rtrl_chunk:U``) runs with ``chunk_size=U``;
``d_rtrl_chunk:auto`` with the chunk size ``learner.tune_chunk_size`` measures first (what
``chunk_size="auto"`` does at its first call; the choice and the candidates' times are printed
and kept in the JSON).
``bt:bptt``, ``bt:es_d_rtrl`` and ``bt:d_rtrl`` are braintrace 0.2.8's, the same model
and data (``_braintrace_worker.make_call``), timed in the same rounds: they need an
interpreter with both libraries (``bash benchmarks/setup_braintrace.sh --with-disttrace``
makes one)::

    benchmarks/.venv-braintrace/bin/python benchmarks/chunked_vs_bptt.py --rounds 20 \
        --algos bptt bt:bptt es_d_rtrl_chunk es_d_rtrl bt:es_d_rtrl d_rtrl_chunk
``--out PATH`` writes the rows and the command as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import time

from _hlo_flops import dot_flops
from _sizes import add_size_args


def _parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_args(p, n_rec=512, batch=64, n_layers=1)
    p.add_argument("--T", type=int, default=200)
    p.add_argument("--chunk", type=int, default=100, help="chunk_size of d_rtrl_chunk / es_d_rtrl_chunk")
    p.add_argument("--algos", nargs="+", default=["bptt", "d_rtrl_chunk"])
    p.add_argument("--rounds", type=int, default=10, help="timed calls of each algorithm (after one warm-up)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="disttrace.allocator.keep_freed_memory() first: glibc keeps freed memory (no page faults)")
    p.add_argument("--out", default=None, help="JSON path (optional)")
    return p


def _braintrace_call(a, algo):
    """``(call, matmul FLOPs)``: braintrace's timed call for ``bt:<algo>`` (same model, data
    and sizes) and what its compiled program executes in matrix products."""
    try:
        import braintrace  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"--algos {algo}: braintrace is not importable here ({e}); run with an interpreter that has "
                         "both libraries: bash benchmarks/setup_braintrace.sh --with-disttrace") from None
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _braintrace_worker import make_call

    name = algo.split(":", 1)[1]
    if name not in ("bptt", "d_rtrl", "es_d_rtrl"):
        raise SystemExit(f"--algos {algo}: braintrace algorithms are bt:bptt, bt:d_rtrl, bt:es_d_rtrl")
    sizes = argparse.Namespace(algo=name, T=a.T, n_in=a.n_in, n_rec=a.n_rec, n_out=a.n_out, batch=a.batch,
                               n_layers=a.n_layers)
    run, xs, ys = make_call(sizes)
    return lambda: jax.block_until_ready(run(xs, ys)), dot_flops(run.lower(xs, ys).compile().as_text())


def _learner(a, algo):
    import jax.numpy as jnp

    import disttrace as dt

    net = dt.nn.SpikingNet(a.n_in, a.n_rec, a.n_out, n_layers=a.n_layers, neuron="lif", recurrent=True, tau_out=0.0)
    x0 = jnp.zeros((a.batch, a.n_in))
    name, _, u = algo.partition(":")
    chunk = ((u if u == "auto" else int(u)) if u else a.chunk) if name.endswith("_chunk") else None
    if name == "bptt":
        learner = dt.compile(net, dt.BPTT, x0, batch_size=a.batch)
    elif name.startswith("es_d_rtrl"):
        learner = dt.compile(net, dt.ES_D_RTRL, x0, batch_size=a.batch, decay=0.9)
    elif name.startswith("d_rtrl"):
        learner = dt.compile(net, dt.D_RTRL, x0, batch_size=a.batch)
    else:
        raise ValueError(f"--algos: unknown algorithm {algo!r} (bptt, d_rtrl[_chunk[:U]], es_d_rtrl[_chunk[:U]])")
    return learner, chunk


def _allocator(kept: bool = False) -> str:
    """The malloc this process runs on: a preloaded jemalloc/tcmalloc/mimalloc, else glibc
    (``kept``: set by ``disttrace.allocator.keep_freed_memory``)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in maps:
            return name + (f" (MALLOC_CONF={os.environ['MALLOC_CONF']})" if "MALLOC_CONF" in os.environ else "")
    if kept:
        return "glibc (disttrace.allocator.keep_freed_memory)"
    return "glibc" + (f" (GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']})" if "GLIBC_TUNABLES" in os.environ else "")


def main(argv=None):
    a = _parser().parse_args(argv)
    kept = False
    if a.keep_freed_memory:
        import disttrace as dt

        kept = dt.allocator.keep_freed_memory()
        if not kept:
            print("--keep-freed-memory: this process's C library is not glibc; nothing changed", flush=True)
    import brainstate
    import jax
    import jax.numpy as jnp

    brainstate.random.seed(0)
    xs = (jax.random.uniform(jax.random.PRNGKey(1), (a.T, a.batch, a.n_in)) < 0.2).astype(jnp.float32)
    ys = jax.random.normal(jax.random.PRNGKey(2), (a.T, a.batch, a.n_out))
    calls, flops, chunks = {}, {}, {}
    for algo in a.algos:
        if algo.startswith("bt:"):
            call, flops[algo] = _braintrace_call(a, algo)
        else:
            learner, chunk = _learner(a, algo)

            def step_fn(x, y, learner=learner):
                return jnp.mean((learner(x) - y) ** 2)

            if chunk == "auto":  # what etrace_grad(chunk_size="auto") does at its first call, shown
                t0 = time.perf_counter()
                choice = learner.tune_chunk_size(xs, ys, step_fn=step_fn)
                chunk = choice.chunk_size
                timed = ", ".join(f"{u}: {sec:.4f} s" for u, sec in choice.seconds.items())
                print(f"{algo:>18}: chunk_size {chunk} ({timed}; tuning took {time.perf_counter() - t0:.1f} s)",
                      flush=True)
                chunks[algo] = {"chunk_size": chunk, "seconds": choice.seconds}

            def call(learner=learner, chunk=chunk, step_fn=step_fn):
                return jax.block_until_ready(learner.etrace_grad(xs, ys, step_fn=step_fn, chunk_size=chunk))

            compiled = learner.etrace_grad_compiled(xs, ys, step_fn=step_fn, chunk_size=chunk)
            flops[algo] = dot_flops(compiled.as_text())

        t0 = time.perf_counter()
        call()
        print(f"{algo:>18}: first call {time.perf_counter() - t0:.2f} s", flush=True)
        calls[algo] = call
    times = {algo: [] for algo in a.algos}
    cpu = {algo: [] for algo in a.algos}
    faults = {algo: [] for algo in a.algos}
    order, rng = list(a.algos), random.Random(0)
    for _ in range(a.rounds):
        for algo in order:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            calls[algo]()
            times[algo].append(time.perf_counter() - t0)
            cpu[algo].append(time.process_time() - c0)
            faults[algo].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        rng.shuffle(order)
    base = a.algos[0]
    med_base = statistics.median(times[base])
    rows = []
    med_cpu_base = statistics.median(cpu[base])
    print(f"allocator: {_allocator(kept)}")
    print(f"{'algo':>18} {'min s':>8} {'median s':>9} {'x ' + base:>10} {'round ratios (median)':>22} "
          f"{'cpu s (median)':>15} {'cpu x ' + base:>12} {'page faults':>12} {'matmul GFLOP':>13} {'flop x ' + base:>12}")
    for algo in a.algos:
        med = statistics.median(times[algo])
        per_round = statistics.median(t / b for t, b in zip(times[algo], times[base]))
        med_cpu = statistics.median(cpu[algo])
        med_faults = statistics.median(faults[algo])
        gflop = flops[algo] / 1e9 if algo in flops else None
        flop_ratio = flops[algo] / flops[base] if algo in flops and base in flops else None
        rows.append({"algo": algo, "min_s": min(times[algo]), "median_s": med, "ratio_median": med / med_base,
                     "ratio_per_round_median": per_round, "cpu_median_s": med_cpu,
                     "cpu_ratio_median": med_cpu / med_cpu_base, "page_faults_median": med_faults,
                     "matmul_gflop": gflop, "flop_ratio": flop_ratio, "auto_chunk": chunks.get(algo),
                     "times_s": times[algo], "cpu_s": cpu[algo], "page_faults": faults[algo]})
        print(f"{algo:>18} {min(times[algo]):8.4f} {med:9.4f} {med / med_base:10.3f} {per_round:22.3f} "
              f"{med_cpu:15.4f} {med_cpu / med_cpu_base:12.3f} {med_faults:12.0f} "
              f"{'-' if gflop is None else f'{gflop:.2f}':>13} {'-' if flop_ratio is None else f'{flop_ratio:.3f}':>12}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        payload = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
                   "device": str(jax.devices()[0]), "jax": jax.__version__, "machine": platform.machine(),
                   "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "allocator": _allocator(kept),
                   "args": vars(a), "rows": rows}
        with open(a.out, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
