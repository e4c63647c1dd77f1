"""Online training on a built-in task: ``python -m launch.train [--config FILE] [--steps N]
[--checkpoint-dir DIR]``.

With a checkpoint directory the run saves parameters, optimizer state and the data RNG
every ``checkpoint_every`` steps and at the end, and a rerun of the same command resumes
from the latest one (a killed run loses at most ``checkpoint_every`` steps; the resumed
run computes exactly what the uninterrupted one would have)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import brainstate
import jax
import jax.numpy as jnp
import optax

import disttrace as dt
from disttrace.checkpoint import Checkpointer
from disttrace.config import TrainConfig, load
from disttrace.tasks import EvidenceAccumulation
from disttrace.train import Trainer

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "evidence_lif.yaml"


def main(cfg: TrainConfig) -> float:
    """Trains and returns the held-out accuracy."""
    return train(cfg)[1]


def train(cfg: TrainConfig) -> tuple[Trainer, float]:
    """Trains (resuming from ``cfg.checkpoint_dir`` if it has a checkpoint); returns the
    trainer and the held-out accuracy."""
    brainstate.random.seed(cfg.seed)
    task = EvidenceAccumulation(n_cues=cfg.task.n_cues, delay=cfg.task.delay)
    net = dt.nn.SpikingNet(
        task.n_in, cfg.model.n_rec, task.n_out, n_layers=cfg.model.n_layers, neuron=cfg.model.neuron,
        recurrent=True, tau=cfg.model.tau, tau_out=cfg.model.tau_out,
    )
    learner = dt.compile(net, cfg.algorithm, jnp.zeros((cfg.batch_size, task.n_in)), batch_size=cfg.batch_size)
    trainer = Trainer(learner, optax.adam(cfg.learning_rate), chunk_size=cfg.chunk_size)
    key = jax.random.PRNGKey(cfg.seed)
    print(f"disttrace {dt.__version__}: {cfg.algorithm} on evidence accumulation (T={task.length}), "
          f"{cfg.model.n_rec} {cfg.model.neuron.upper()} neurons, batch {cfg.batch_size}, {jax.devices()[0].platform}")
    running = None
    ckpt = Checkpointer(cfg.checkpoint_dir, max_to_keep=2) if cfg.checkpoint_dir else None
    if ckpt is not None and ckpt.latest_step() is not None:
        extra, meta = trainer.restore(ckpt, extra={"key": key})
        key, running = extra["key"], meta.get("running_loss")
        print(f"resumed from {ckpt.directory} at step {trainer.step_count}")
    start = time.perf_counter()
    for step in range(trainer.step_count + 1, cfg.steps + 1):
        key, sub = jax.random.split(key)
        loss = trainer.train_batch(*task.sample(sub, cfg.batch_size))
        running = loss if running is None else 0.9 * running + 0.1 * loss
        if step % cfg.log_every == 0 or step == cfg.steps:
            print(f"step {step:5d}  loss {running:.4f}  {time.perf_counter() - start:7.1f}s", flush=True)
        if ckpt is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            trainer.save(ckpt, extra={"key": key}, meta={"running_loss": running}, force=True)
    if ckpt is not None:
        ckpt.close()
    # held-out accuracy on fresh trials, evaluated with the training batch size
    eval_key = jax.random.PRNGKey(10_000 + cfg.seed)
    accs = []
    for i in range(max(1, cfg.eval_batch // cfg.batch_size)):
        accs.append(trainer.accuracy(*task.sample(jax.random.fold_in(eval_key, i), cfg.batch_size)))
    acc = sum(accs) / len(accs)
    print(f"held-out accuracy: {acc:.3f} (chance 0.5) on {len(accs) * cfg.batch_size} trials")
    return trainer, acc


def parse(argv=None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--algorithm", choices=["d_rtrl", "es_d_rtrl", "hybrid", "bptt"])
    parser.add_argument("--checkpoint-dir", help="save here and resume from the latest checkpoint")
    parser.add_argument("--checkpoint-every", type=int)
    args = parser.parse_args(argv)
    return load(args.config, steps=args.steps, algorithm=args.algorithm, checkpoint_dir=args.checkpoint_dir,
                checkpoint_every=args.checkpoint_every)


if __name__ == "__main__":
    main(parse())
