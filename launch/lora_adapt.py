"""Pre-train a recurrent spiking net on evidence accumulation, then LoRA-adapt it online
to the same task with flipped labels (the left/right populations swap meaning):
``python -m launch.lora_adapt [--pretrain-steps N] [--adapt-steps N] [--algorithm ...]``.

After pre-training, ``disttrace.lora.adapt`` freezes every weight (``FrozenState``) and
gives each weight matrix a rank-``rank`` adapter (``B = 0``: the adapted net starts as
the pre-trained one); only the adapters learn, online, with the same algorithm.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import brainstate
import jax
import jax.numpy as jnp
import optax

import disttrace as dt
from disttrace import lora
from disttrace.tasks import EvidenceAccumulation
from disttrace.train import Trainer

_ALGOS = ("d_rtrl", "es_d_rtrl", "hybrid", "bptt")


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """Settings of one run (validated here; the library takes plain arguments)."""

    algorithm: str = "d_rtrl"
    n_rec: int = 64
    batch_size: int = 32
    pretrain_steps: int = 150
    adapt_steps: int = 60
    learning_rate: float = 1e-2
    adapt_learning_rate: float = 1e-2
    rank: int = 4
    alpha: float = 4.0
    n_cues: int = 7
    cue_len: int = 6
    gap: int = 4
    delay: int = 20
    recall: int = 10
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        if self.algorithm not in _ALGOS:
            raise ValueError(f"lora_adapt: field 'algorithm' must be one of {_ALGOS}; got {self.algorithm!r}")
        for name in ("n_rec", "batch_size", "pretrain_steps", "adapt_steps", "rank", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"lora_adapt: field {name!r} must be a positive int; got {v!r}")
        for name in ("learning_rate", "adapt_learning_rate", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"lora_adapt: field {name!r} must be > 0; got {getattr(self, name)!r}")


def _run(trainer: Trainer, task, key, steps: int, flip: bool, log_every: int, phase: str) -> list[float]:
    losses, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        key, sub = jax.random.split(key)
        xs, labels, mask = task.sample(sub, trainer.learner.graph.batch_size)
        losses.append(trainer.train_batch(xs, 1 - labels if flip else labels, mask))
        if step % log_every == 0 or step == steps:
            window = losses[-log_every:]
            print(f"{phase} step {step:4d}  loss {sum(window) / len(window):.4f}  "
                  f"{time.perf_counter() - start:6.1f}s", flush=True)
    return losses


def main(cfg: AdaptConfig) -> dict:
    """Runs both phases; returns the per-trial losses of each (``{'pretrain', 'adapt'}``)."""
    brainstate.random.seed(cfg.seed)
    task = EvidenceAccumulation(n_cues=cfg.n_cues, cue_len=cfg.cue_len, gap=cfg.gap, delay=cfg.delay,
                                recall=cfg.recall)
    net = dt.nn.SpikingNet(task.n_in, cfg.n_rec, task.n_out, recurrent=True, tau_out=5.0)
    x0 = jnp.zeros((cfg.batch_size, task.n_in))
    key = jax.random.PRNGKey(cfg.seed)
    print(f"disttrace {dt.__version__}: {cfg.algorithm}, evidence accumulation (T={task.length}), "
          f"{cfg.n_rec} recurrent LIF neurons, batch {cfg.batch_size}")
    learner = dt.compile(net, cfg.algorithm, x0, batch_size=cfg.batch_size)
    n_full = sum(a.size for a in jax.tree.leaves(learner.params()))
    pre = _run(Trainer(learner, optax.adam(cfg.learning_rate)), task, jax.random.fold_in(key, 1),
               cfg.pretrain_steps, False, cfg.log_every, "pretrain")

    lora.adapt(net, jax.random.fold_in(key, 2), rank=cfg.rank, alpha=cfg.alpha)  # freeze + adapters (B = 0)
    learner = dt.compile(net, cfg.algorithm, x0, batch_size=cfg.batch_size)
    n_lora = sum(a.size for a in jax.tree.leaves(learner.params()))
    print(f"LoRA rank {cfg.rank}: {n_lora} trainable parameters instead of {n_full}; labels flipped")
    adapted = _run(Trainer(learner, optax.adam(cfg.adapt_learning_rate)), task, jax.random.fold_in(key, 3),
                   cfg.adapt_steps, True, cfg.log_every, "adapt")
    k = max(1, min(cfg.log_every, len(adapted) // 2))
    print(f"adaptation: loss {sum(adapted[:k]) / k:.4f} (first {k} trials) -> {sum(adapted[-k:]) / k:.4f} "
          f"(last {k})")
    return {"pretrain": pre, "adapt": adapted}


def parse(argv=None) -> AdaptConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = AdaptConfig()
    for field in dataclasses.fields(AdaptConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "algorithm":
            parser.add_argument(flag, choices=_ALGOS, default=defaults.algorithm)
        else:
            parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name))
    return AdaptConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main(parse())
