"""LoRA on any parameter tree, trainable online (DESIGN.md §3: above ``algorithms``).

Three trees describe a LoRA model (see ``_merge``): the base ``params``, the adapter
``lora_params`` (everything that trains) and the *joined* tree that model functions
read. The pieces:

- specs: :func:`make_lora_spec` (FREEZE / FULL / rank per leaf; conv kernels are
  adapted over (prod(window)·C_in) × C_out);
- factors: :func:`init_lora` (``B = 0`` by default, scale ``alpha/r`` or rsLoRA's
  ``alpha/sqrt(r)``);
- trees: :func:`merge` (plain weights, optionally donating), :func:`join` and
  :func:`split_trainable` (adapter-only checkpoints);
- applying without forming ``W + s·A·B``: :func:`matmul` (also transposed),
  :func:`conv`, :func:`embedding`, through trace ops, so the factors learn online;
- optimizers: :func:`wrap_optimizer` (frozen leaves: no update, no state);
- brainstate models: :class:`FrozenState`, :func:`freeze`, :func:`adapt`.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> from disttrace import lora
  >>> params = {"w": jnp.ones((8, 4)), "b": jnp.zeros(4)}
  >>> spec = lora.make_lora_spec(params, rank=2)
  >>> tree = lora.join(params, lora.init_lora(params, spec, jax.random.PRNGKey(0)), spec)
  >>> loss = lambda t, x: jnp.sum(lora.matmul(x, t["w"], t["b"]) ** 2)
  >>> grads = jax.grad(loss)(tree, jnp.ones((2, 8)))
  >>> opt = lora.wrap_optimizer(optax.sgd(0.1), spec)
  >>> updates, _ = opt.update(grads, opt.init(tree), tree)
  >>> float(abs(updates["w"].w).max()), float(abs(updates["b"]).max())  # frozen: no update
  (0.0, 0.0)
"""

from disttrace.lora._apply import conv as conv
from disttrace.lora._apply import embedding as embedding
from disttrace.lora._apply import matmul as matmul
from disttrace.lora._apply import merged_weight as merged_weight
from disttrace.lora._factors import INITS as INITS
from disttrace.lora._factors import LoRAFactors as LoRAFactors
from disttrace.lora._factors import LoRAWeight as LoRAWeight
from disttrace.lora._factors import init_factors as init_factors
from disttrace.lora._factors import init_lora as init_lora
from disttrace.lora._merge import join as join
from disttrace.lora._merge import merge as merge
from disttrace.lora._merge import split_trainable as split_trainable
from disttrace.lora._modules import FrozenState as FrozenState
from disttrace.lora._modules import LoRAParam as LoRAParam
from disttrace.lora._modules import adapt as adapt
from disttrace.lora._modules import freeze as freeze
from disttrace.lora._optim import wrap_optimizer as wrap_optimizer
from disttrace.lora._spec import FREEZE as FREEZE
from disttrace.lora._spec import FULL as FULL
from disttrace.lora._spec import Decision as Decision
from disttrace.lora._spec import check_rank as check_rank
from disttrace.lora._spec import lora_scale as lora_scale
from disttrace.lora._spec import make_lora_spec as make_lora_spec
from disttrace.lora._spec import matrix_shape as matrix_shape

__all__ = [
    "FREEZE",
    "FULL",
    "INITS",
    "Decision",
    "FrozenState",
    "LoRAFactors",
    "LoRAParam",
    "LoRAWeight",
    "adapt",
    "check_rank",
    "conv",
    "embedding",
    "freeze",
    "init_factors",
    "init_lora",
    "join",
    "lora_scale",
    "make_lora_spec",
    "matmul",
    "matrix_shape",
    "merge",
    "merged_weight",
    "split_trainable",
    "wrap_optimizer",
]
