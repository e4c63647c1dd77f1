"""Trace ops: the only way a weight enters a model that learns online.

Each op computes its plain result and is a named ``jax.jit`` that the compiler
recognises; its :class:`TraceOpRule` tells the algorithms how to keep its traces.
A user adds an op with :func:`register` (a rule) and :func:`trace_op` (the jit).
"""

from disttrace.ops._blocks import apply_block as apply_block
from disttrace.ops._conv import conv as conv
from disttrace.ops._einsum import einsum as einsum
from disttrace.ops._element_wise import ElementWiseRule as ElementWiseRule
from disttrace.ops._element_wise import element_wise as element_wise
from disttrace.ops._embedding import embedding as embedding
from disttrace.ops._grouped import grouped_matmul as grouped_matmul
from disttrace.ops._lora import lora_conv as lora_conv
from disttrace.ops._lora import lora_embedding as lora_embedding
from disttrace.ops._lora import lora_matmul as lora_matmul
from disttrace.ops._matmul import MatmulRule as MatmulRule
from disttrace.ops._matmul import matmul as matmul
from disttrace.ops._registry import ConvWindow as ConvWindow
from disttrace.ops._registry import OpBody as OpBody
from disttrace.ops._registry import TraceOpRule as TraceOpRule
from disttrace.ops._registry import get_rule as get_rule
from disttrace.ops._registry import register as register
from disttrace.ops._registry import registered_names as registered_names
from disttrace.ops._registry import trace_op as trace_op
from disttrace.ops._sparse import sparse_coordinates as sparse_coordinates
from disttrace.ops._sparse import sparse_matmul as sparse_matmul

__all__ = [
    "ConvWindow",
    "ElementWiseRule",
    "MatmulRule",
    "OpBody",
    "TraceOpRule",
    "apply_block",
    "conv",
    "einsum",
    "element_wise",
    "embedding",
    "get_rule",
    "grouped_matmul",
    "lora_conv",
    "lora_embedding",
    "lora_matmul",
    "matmul",
    "register",
    "registered_names",
    "sparse_coordinates",
    "sparse_matmul",
    "trace_op",
]
