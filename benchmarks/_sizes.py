"""The model-size arguments shared by the benchmarks of the recurrent LIF network
(``online_vs_bptt.py``, ``chunked_vs_bptt.py``, ``memory.py`` and the braintrace worker;
stdlib only, so both interpreters can import it)."""

import argparse


def add_size_args(p: argparse.ArgumentParser, *, n_rec: int, batch: int, n_layers: int) -> None:
    """Adds ``--n-rec --batch --n-in --n-out --n-layers`` (inputs 100 and outputs 10 by
    default everywhere; the others per script)."""
    p.add_argument("--n-rec", type=int, default=n_rec)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--n-in", type=int, default=100)
    p.add_argument("--n-out", type=int, default=10)
    p.add_argument("--n-layers", type=int, default=n_layers)
