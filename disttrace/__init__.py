"""disttrace: distributed online learning for recurrent and spiking networks in JAX.

Layers, from low to high (imports go downward only; enforced by import-linter):
``errors``/``checks`` -> ``ops`` (trace ops) -> ``compiler`` (jaxpr -> ETraceGraph) ->
``algorithms`` (one module per learning rule, the OnlineLearner, BPTT) -> ``lora`` -> ``nn``
(layers) -> ``distributed`` (mesh, partition rules) -> ``checkpoint`` (Orbax) -> ``tasks``
(built-in tasks) -> ``train`` (TrainState, train_step, Trainer) -> ``streaming`` (sources,
ledger, worker loop; no ray) -> ``config`` (registries,
YAML) -> ``testing`` (BPTT oracle helpers). ``launch/`` sits on top. See docs/design.md.
"""

from disttrace import algorithms as algorithms
from disttrace import allocator as allocator
from disttrace import checkpoint as checkpoint
from disttrace import compiler as compiler
from disttrace import distributed as distributed
from disttrace import errors as errors
from disttrace import lora as lora
from disttrace import nn as nn
from disttrace import ops as ops
from disttrace import streaming as streaming
from disttrace import train as train
from disttrace import units as units
from disttrace.algorithms import BPTT as BPTT
from disttrace.algorithms import D_RTRL as D_RTRL
from disttrace.algorithms import ES_D_RTRL as ES_D_RTRL
from disttrace.algorithms import RTRL as RTRL
from disttrace.algorithms import UORO as UORO
from disttrace.algorithms import ControlFlowPolicy as ControlFlowPolicy
from disttrace.algorithms import EProp as EProp
from disttrace.algorithms import ETraceAlgorithm as ETraceAlgorithm
from disttrace.algorithms import ETraceGraphExecutor as ETraceGraphExecutor
from disttrace.algorithms import ETraceVjpAlgorithm as ETraceVjpAlgorithm
from disttrace.algorithms import Hybrid as Hybrid
from disttrace.algorithms import IODimVjpAlgorithm as IODimVjpAlgorithm
from disttrace.algorithms import MultiStepData as MultiStepData
from disttrace.algorithms import NotSupportedError as NotSupportedError
from disttrace.algorithms import OSTLFeedforward as OSTLFeedforward
from disttrace.algorithms import OSTLRecurrent as OSTLRecurrent
from disttrace.algorithms import ParamDimVjpAlgorithm as ParamDimVjpAlgorithm
from disttrace.algorithms import RandomProjectionVjpAlgorithm as RandomProjectionVjpAlgorithm
from disttrace.algorithms import SingleStepData as SingleStepData
from disttrace.algorithms import SnAp as SnAp
from disttrace.algorithms import ThreeFactor as ThreeFactor
from disttrace.algorithms import compile as compile  # noqa: A004
from disttrace.algorithms import pp_prop as pp_prop
from disttrace.compiler import compile_etrace_graph as compile_etrace_graph
from disttrace.errors import CompilationError as CompilationError
from disttrace.ops import conv as conv
from disttrace.ops import einsum as einsum
from disttrace.ops import element_wise as element_wise
from disttrace.ops import embedding as embedding
from disttrace.ops import grouped_matmul as grouped_matmul
from disttrace.ops import lora_matmul as lora_matmul
from disttrace.ops import matmul as matmul
from disttrace.ops import sparse_matmul as sparse_matmul

__version__ = "0.1.0"
__version_info__ = tuple(int(part) for part in __version__.split("."))
"""``(major, minor, patch)`` ints, as braintrace's ``__version_info__``."""

__all__ = [
    "BPTT",
    "CompilationError",
    "ControlFlowPolicy",
    "D_RTRL",
    "ES_D_RTRL",
    "EProp",
    "ETraceAlgorithm",
    "ETraceGraphExecutor",
    "ETraceVjpAlgorithm",
    "Hybrid",
    "IODimVjpAlgorithm",
    "MultiStepData",
    "NotSupportedError",
    "OSTLFeedforward",
    "OSTLRecurrent",
    "ParamDimVjpAlgorithm",
    "RTRL",
    "RandomProjectionVjpAlgorithm",
    "SingleStepData",
    "SnAp",
    "ThreeFactor",
    "UORO",
    "algorithms",
    "allocator",
    "checkpoint",
    "compile",
    "compile_etrace_graph",
    "compiler",
    "conv",
    "distributed",
    "einsum",
    "element_wise",
    "embedding",
    "errors",
    "grouped_matmul",
    "lora",
    "lora_matmul",
    "matmul",
    "nn",
    "ops",
    "pp_prop",
    "sparse_matmul",
    "streaming",
    "train",
]
