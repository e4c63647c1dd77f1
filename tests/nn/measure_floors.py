"""Prints the cosine of each online algorithm to BPTT for every layer case, with the
settings of ``test_layers.py`` — the measurement the recorded floors come from.

    python -m tests.nn.measure_floors [name-substring ...]
"""

import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import brainstate  # noqa: E402

brainstate.environ.set(precision=64)

import disttrace as dt  # noqa: E402
from disttrace.testing import cosine, gradients  # noqa: E402
from tests.nn.test_layers import ALGOS, CASES, _sequences  # noqa: E402


def main(filters):
    print(f"jax {jax.__version__}; float64; T, B as in test_layers.py")
    for case in CASES:
        if filters and not any(f in case.name for f in filters):
            continue
        brainstate.random.seed(0)
        xs, ys = _sequences(case, case.build_model())
        ref = gradients(case.build_model, dt.BPTT, xs, ys)
        row = []
        for name, algo in sorted(ALGOS.items()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = gradients(case.build_model, algo, xs, ys)
            row.append(f"{name} {cosine(got, ref):.4f}")
        print(f"{case.name:20s} " + "  ".join(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
