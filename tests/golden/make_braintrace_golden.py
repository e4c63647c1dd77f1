"""Generates tests/golden/braintrace_pp_prop.npz: gradients of braintrace 0.2.8.

Provenance: braintrace 0.2.8, brainstate 0.6.0, jax 0.12.0.1, float64, CPU,
generated 2026-11-23. braintrace needs Python >= 3.12, so it runs in its own venv:

    bash benchmarks/setup_braintrace.sh          # makes benchmarks/.venv-braintrace
    benchmarks/.venv-braintrace/bin/python tests/golden/make_braintrace_golden.py

This script only calls braintrace's public API (compile, etrace_grad, nn.Linear);
disttrace's test (tests/golden/test_braintrace_golden.py) rebuilds the same models
from the saved weights and compares.

Model A ("leaky"):     a_t = x_t @ W_in + b_in
                       h_t = alpha * h_{t-1} + tanh(a_t)          (alpha fixed, elementwise)
                       y_t = h_t @ W_out + b_out
Model B ("leaky_rec"): a_t = x_t @ W_in + b_in + tanh(h_{t-1}) @ W_rec
                       h_t = alpha * h_{t-1} + tanh(a_t)
                       y_t = h_t @ W_out + b_out
Loss per step: L_t = mean_{b,o} (y_t - target_t)^2.
Gradients via learner.etrace_grad(xs, ys, step_fn=..., reduction='mean'|'sum').

Besides braintrace's numbers the script prints a from-scratch numpy evaluation of
the formulas read from the source (so the formulas can be checked), plus exact
BPTT gradients.
"""
import os

import jax

jax.config.update('jax_enable_x64', True)

import brainstate
import braintrace
import jax.numpy as jnp
import numpy as np

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
np.set_printoptions(precision=8, suppress=False, linewidth=140)

T, B, N_IN, N_HID, N_OUT = 5, 2, 3, 4, 2
DECAY = 0.9  # float -> decay; int r -> (r-1)/(r+1)

rng = np.random.RandomState(0)
params_np = dict(
    W_in=rng.randn(N_IN, N_HID) * 0.7,
    b_in=rng.randn(N_HID) * 0.1,
    W_rec=rng.randn(N_HID, N_HID) * 0.5,
    W_out=rng.randn(N_HID, N_OUT) * 0.6,
    b_out=rng.randn(N_OUT) * 0.1,
    alpha=np.array([0.5, 0.7, 0.8, 0.95]),
    xs=rng.randn(T, B, N_IN),
    ys=rng.randn(T, B, N_OUT),
)


class Leaky(brainstate.nn.Module):
    def __init__(self, recurrent: bool):
        super().__init__()
        p = params_np
        self.recurrent = recurrent
        self.fc_in = braintrace.nn.Linear(N_IN, N_HID, w_init=jnp.asarray(p['W_in']),
                                          b_init=jnp.asarray(p['b_in']))
        if recurrent:
            self.fc_rec = braintrace.nn.Linear(N_HID, N_HID, w_init=jnp.asarray(p['W_rec']), b_init=None)
        self.fc_out = braintrace.nn.Linear(N_HID, N_OUT, w_init=jnp.asarray(p['W_out']),
                                           b_init=jnp.asarray(p['b_out']))
        self.alpha = jnp.asarray(p['alpha'])

    def init_state(self, batch_size=None, **kwargs):
        shape = (N_HID,) if batch_size is None else (batch_size, N_HID)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        h_prev = self.h.value
        a = self.fc_in(x)
        if self.recurrent:
            a = a + self.fc_rec(jnp.tanh(h_prev))
        self.h.value = self.alpha * h_prev + jnp.tanh(a)
        return self.fc_out(self.h.value)


def braintrace_grads(recurrent, algo, reduction='mean', **opts):
    model = Leaky(recurrent)
    xs = jnp.asarray(params_np['xs'])
    ys = jnp.asarray(params_np['ys'])
    learner = braintrace.compile(model, algo, xs[0], batch_size=B, **opts)

    def step_fn(x, y):
        out = learner(x)
        return jnp.mean((out - y) ** 2)

    grads, losses = learner.etrace_grad(xs, ys, step_fn=step_fn, reduction=reduction,
                                        return_value=True)
    return grads, losses, learner


# ---------------------------------------------------------------------------
# from-scratch evaluation of the formulas (numpy, no braintrace)
# ---------------------------------------------------------------------------
def manual(recurrent, algo, decay=DECAY):
    p = params_np
    a_ = p['alpha']
    W_in, b_in, W_rec, W_out, b_out = p['W_in'], p['b_in'], p['W_rec'], p['W_out'], p['b_out']
    h = np.zeros((B, N_HID))
    # traces
    ex = {'in': np.zeros((B, N_IN)), 'rec': np.zeros((B, N_HID))}
    ef = {'in': np.zeros((B, N_HID)), 'rec': np.zeros((B, N_HID))}
    eW = {'in': np.zeros((B, N_IN, N_HID)), 'in_b': np.zeros((B, N_HID)),
          'rec': np.zeros((B, N_HID, N_HID))}
    g = {k: 0. for k in ['W_in', 'b_in', 'W_rec', 'W_out', 'b_out']}
    for t in range(T):
        x = p['xs'][t]
        r_prev = np.tanh(h)
        a = x @ W_in + b_in + (r_prev @ W_rec if recurrent else 0.)
        h_new = a_ * h + np.tanh(a)
        y = h_new @ W_out + b_out
        dy = 2 * (y - p['ys'][t]) / (B * N_OUT)        # dL_t/dy_t
        delta = dy @ W_out.T                             # dL_t/dh_t (learning signal)
        g['W_out'] = g['W_out'] + h_new.T @ dy
        g['b_out'] = g['b_out'] + dy.sum(0)
        df = 1 - np.tanh(a) ** 2                         # dh_t/da_t (all-ones jvp)
        D = a_                                            # diag dh_t/dh_{t-1}, recurrent mixing excluded
        if algo == 'pp_prop':
            corr = 1 - decay ** (t + 1)                  # running_index = t (0-based) -> exponent t+1
            ex['in'] = decay * ex['in'] + x
            ef['in'] = decay * (D * ef['in']) + (1 - decay) * df
            s = ef['in'] / corr * delta
            g['W_in'] = g['W_in'] + ex['in'].T @ s
            g['b_in'] = g['b_in'] + s.sum(0)
            if recurrent:
                ex['rec'] = decay * ex['rec'] + r_prev
                ef['rec'] = decay * (D * ef['rec']) + (1 - decay) * df
                g['W_rec'] = g['W_rec'] + ex['rec'].T @ (ef['rec'] / corr * delta)
        else:  # D_RTRL
            eW['in'] = D[None, None, :] * eW['in'] + x[:, :, None] * df[:, None, :]
            eW['in_b'] = D[None, :] * eW['in_b'] + df
            g['W_in'] = g['W_in'] + np.einsum('bio,bo->io', eW['in'], delta)
            g['b_in'] = g['b_in'] + (eW['in_b'] * delta).sum(0)
            if recurrent:
                eW['rec'] = D[None, None, :] * eW['rec'] + r_prev[:, :, None] * df[:, None, :]
                g['W_rec'] = g['W_rec'] + np.einsum('bio,bo->io', eW['rec'], delta)
        h = h_new
    return {k: v / T for k, v in g.items() if not (isinstance(v, float))}


def bptt(recurrent):
    p = {k: jnp.asarray(v) for k, v in params_np.items()}

    def loss(w):
        h = jnp.zeros((B, N_HID))
        tot = 0.
        for t in range(T):
            a = p['xs'][t] @ w['W_in'] + w['b_in']
            if recurrent:
                a = a + jnp.tanh(h) @ w['W_rec']
            h = p['alpha'] * h + jnp.tanh(a)
            y = h @ w['W_out'] + w['b_out']
            tot = tot + jnp.mean((y - p['ys'][t]) ** 2)
        return tot / T

    w = {k: p[k] for k in ['W_in', 'b_in', 'W_out', 'b_out'] + (['W_rec'] if recurrent else [])}
    return jax.grad(loss)(w)


def key_map(recurrent):
    m = {('fc_in', 'weight'): 'W_in', ('fc_in', 'bias'): 'b_in',
         ('fc_out', 'weight'): 'W_out', ('fc_out', 'bias'): 'b_out'}
    if recurrent:
        m[('fc_rec', 'weight')] = 'W_rec'
    return m


def flatten_bt(grads):
    out = {}
    for path, val in grads.items():
        for k, v in val.items():
            out[(path[-2] if len(path) >= 2 else path[0], k)] = np.asarray(v)
    return out


def main():
    print('braintrace', braintrace.__version__, '| jax', jax.__version__, '| x64', jax.config.jax_enable_x64)
    print(f'T={T} B={B} N_IN={N_IN} N_HID={N_HID} N_OUT={N_OUT} decay_or_rank={DECAY}')
    saved = {}
    for recurrent in (False, True):
        name = 'leaky_rec' if recurrent else 'leaky'
        print('\n' + '=' * 100)
        print(f'MODEL {name}')
        ref = bptt(recurrent)
        for algo, opts in (('pp_prop', dict(decay_or_rank=DECAY)), ('D_RTRL', {})):
            grads, losses, learner = braintrace_grads(recurrent, algo, **opts)
            if recurrent is False and algo == 'pp_prop':
                print('grad dict keys (paths):', list(grads.keys()))
                print('inner keys:', {k: list(v.keys()) for k, v in grads.items()})
            gsum, _, _ = braintrace_grads(recurrent, algo, reduction='sum', **opts)
            print('-' * 100)
            print(f'[{algo}] per-step losses: {np.asarray(losses)}')
            bt = flatten_bt(grads)
            bts = flatten_bt(gsum)
            man = manual(recurrent, algo)
            for (mod, leaf), nm in sorted(key_map(recurrent).items(), key=lambda kv: kv[1]):
                v = bt[(mod, leaf)]
                print(f'  {nm} (braintrace, reduction=mean):\n{v}')
                print(f'    max|bt_sum/T - bt_mean| = {np.abs(bts[(mod, leaf)] / T - v).max():.3e}'
                      f'   max|manual - bt| = {np.abs(man[nm] - v).max():.3e}'
                      f'   max|BPTT - bt| = {np.abs(np.asarray(ref[nm]) - v).max():.3e}')
                saved[f'{name}/{algo}/{nm}'] = v
        for nm, v in ref.items():
            saved[f'{name}/BPTT/{nm}'] = np.asarray(v)
        print('-' * 100)
        print('[BPTT exact] (mean over T)')
        for nm, v in sorted(ref.items()):
            print(f'  {nm}:\n{np.asarray(v)}')

    # rank-form check: int rank r -> decay (r-1)/(r+1)
    print('\n' + '=' * 100)
    r = 19
    g_rank, _, ln = braintrace_grads(False, 'pp_prop', decay_or_rank=r)
    g_flt, _, _ = braintrace_grads(False, 'pp_prop', decay_or_rank=(r - 1) / (r + 1))
    print(f'rank {r}: learner.decay_x={ln.decay_x}, decay_f={ln.decay_f}; '
          f'max diff vs float {(r - 1) / (r + 1)}: '
          f'{max(np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(jax.tree.leaves(g_rank), jax.tree.leaves(g_flt))):.3e}')
    out = {f'params__{k}': v for k, v in params_np.items()}
    out['params__decay'] = np.asarray(DECAY)
    out.update({f"grads__{k.replace('/', '__')}": v for k, v in saved.items()})
    np.savez(os.path.join(OUT_DIR, 'braintrace_pp_prop.npz'), **out)


if __name__ == '__main__':
    main()
