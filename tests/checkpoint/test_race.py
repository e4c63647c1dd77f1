"""No save/restore race: a restore right after an asynchronous save waits for it, and
``steps()``/``latest_step()`` list only committed steps while a save is in flight, even
with a CPU-burning thread competing for the interpreter and the cores."""

import threading

import jax.numpy as jnp
import numpy as np

from disttrace.checkpoint import Checkpointer

N = 1 << 20  # 4 MiB of float32 per save: long enough in flight to be caught mid-write


def _burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1_000_003  # pure Python: holds the GIL in slices


def test_restore_right_after_an_async_save(tmp_path):
    stop = threading.Event()
    burner = threading.Thread(target=_burn, args=(stop,), daemon=True)
    burner.start()
    target = {"w": jnp.zeros(N, jnp.float32), "i": jnp.zeros((), jnp.int32)}
    base = jnp.arange(N, dtype=jnp.float32)
    try:
        with Checkpointer(tmp_path, max_to_keep=2) as ckpt:  # retention deletes a step on every save
            for i in range(1, 21):
                ckpt.save(i, {"w": base + i, "i": jnp.asarray(i, jnp.int32)}, meta={"i": i})
                # while step i is in flight: only committed steps are listed, without warnings
                assert set(ckpt.steps()) <= {i - 2, i - 1, i}
                assert ckpt.latest_step() in ({i - 1, i} if i > 1 else {None, 1})
                state, meta = ckpt.restore(target, step=i if i % 2 else None)
                assert ckpt.restored_step == i and meta == {"i": i} and int(state["i"]) == i
                np.testing.assert_array_equal(state["w"], np.asarray(base + i))
                assert ckpt.steps() == ([i - 1, i] if i > 1 else [1])
    finally:
        stop.set()
        burner.join()
