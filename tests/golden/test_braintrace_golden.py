"""disttrace's ES-D-RTRL (pp_prop) and D-RTRL gradients equal braintrace 0.2.8's on the
same model, weights and data (golden file ``braintrace_pp_prop.npz``; provenance and
regeneration command in ``make_braintrace_golden.py``).

Models (T=5, B=2, in 3, hidden 4, out 2, float64, decay 0.9):
  leaky:     h_t = α ∘ h_{t-1} + tanh(x_t W_in + b_in),                 y_t = h_t W_out + b_out
  leaky_rec: h_t = α ∘ h_{t-1} + tanh(x_t W_in + b_in + tanh(h_{t-1}) W_rec)
Loss: mean over time of mean((y_t - target_t)^2).

pp_prop agrees to 1e-12 on both models. D-RTRL agrees on ``leaky``; on ``leaky_rec``
braintrace's D-RTRL takes the per-neuron Jacobian D_t = α (it drops the diagonal of the
recurrent path), while disttrace's D_t is the exact diagonal of ∂h_t/∂h_{t-1}: there the
readout gradients are identical and disttrace's whole gradient is closer to BPTT.
"""

import pathlib

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import disttrace as dt
from disttrace.testing import EXACT_F64_ATOL, cosine

GOLDEN = np.load(pathlib.Path(__file__).with_name("braintrace_pp_prop.npz"))
P = {k.removeprefix("params__"): GOLDEN[k] for k in GOLDEN if k.startswith("params__")}
NAMES = {("fc_in", "weight"): ("W_in", "b_in"), ("fc_out", "weight"): ("W_out", "b_out"), ("fc_rec", "weight"): ("W_rec", None)}


class Leaky(brainstate.nn.Module):
    def __init__(self, recurrent):
        super().__init__()
        self.recurrent = recurrent
        self.fc_in = dt.nn.Linear(3, 4, w_init=jnp.asarray(P["W_in"]), b_init=jnp.asarray(P["b_in"]))
        if recurrent:
            self.fc_rec = dt.nn.Linear(4, 4, w_init=jnp.asarray(P["W_rec"]), b_init=None)
        self.fc_out = dt.nn.Linear(4, 2, w_init=jnp.asarray(P["W_out"]), b_init=jnp.asarray(P["b_out"]))
        self.alpha = jnp.asarray(P["alpha"])

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, 4)))

    def update(self, x):
        h_prev = self.h.value
        a = self.fc_in(x)
        if self.recurrent:
            a = a + self.fc_rec(jnp.tanh(h_prev))
        self.h.value = self.alpha * h_prev + jnp.tanh(a)
        return self.fc_out(self.h.value)


def _ours(recurrent, algorithm):
    learner = dt.compile(Leaky(recurrent), algorithm, jnp.zeros((2, 3)), batch_size=2)
    xs, ys = jnp.asarray(P["xs"]), jnp.asarray(P["ys"])
    grads, losses = learner.etrace_grad(
        xs, ys, step_fn=lambda x, y: jnp.mean((learner(x) - y) ** 2), return_value=True
    )
    flat = {}
    for path, (w_name, b_name) in NAMES.items():
        if path in grads:
            flat[w_name] = np.asarray(grads[path]["weight"])
            if b_name is not None:
                flat[b_name] = np.asarray(grads[path]["bias"])
    return flat, np.asarray(losses)


def _golden(model, algo):
    prefix = f"grads__{model}__{algo}__"
    return {k.removeprefix(prefix): GOLDEN[k] for k in GOLDEN if k.startswith(prefix)}


@pytest.mark.parametrize("algo,ours", [("pp_prop", dt.ES_D_RTRL(decay=float(P["decay"]))), ("D_RTRL", dt.D_RTRL)])
def test_leaky_equals_braintrace(x64, algo, ours):
    got, _ = _ours(False, ours)
    ref = _golden("leaky", algo)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=EXACT_F64_ATOL, err_msg=name)


def test_braintrace_spelling_of_decay(x64):
    got, _ = _ours(False, dt.pp_prop(decay_or_rank=float(P["decay"])))
    ref = _golden("leaky", "pp_prop")
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=EXACT_F64_ATOL, err_msg=name)


def test_leaky_rec_pp_prop_equals_braintrace(x64):
    got, _ = _ours(True, dt.ES_D_RTRL(decay=float(P["decay"])))
    ref = _golden("leaky_rec", "pp_prop")
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=EXACT_F64_ATOL, err_msg=name)


def test_leaky_rec_d_rtrl_readout_equal_and_closer_to_bptt(x64):
    got, _ = _ours(True, dt.D_RTRL)
    ref = _golden("leaky_rec", "D_RTRL")
    bptt = _golden("leaky_rec", "BPTT")
    for name in ("W_out", "b_out"):  # exact spatial gradients: identical
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=EXACT_F64_ATOL, err_msg=name)
    names = sorted(bptt)
    ours_cos = cosine([got[n] for n in names], [bptt[n] for n in names])
    bt_cos = cosine([ref[n] for n in names], [bptt[n] for n in names])
    # measured 2026-11-23: ours 0.98662, braintrace 0.98095
    assert ours_cos > bt_cos
