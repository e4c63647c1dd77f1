"""Online-learning algorithms over explicit pytree state, and ``compile``.

One module per learning rule (``_d_rtrl``, ``_es_d_rtrl``; ``_bptt`` the oracle), each
a :class:`LearningRule` bound to one trace op plus the spec that assigns it; the
:class:`OnlineLearner` (``_online``) runs any assignment, ``Hybrid`` is one.
"""

from disttrace.algorithms._bptt import BPTT as BPTT
from disttrace.algorithms._bptt import BPTTLearner as BPTTLearner
from disttrace.algorithms._bptt import BPTTState as BPTTState
from disttrace.algorithms._chunk_tuning import ChunkChoice as ChunkChoice
from disttrace.algorithms._chunk_tuning import chunk_candidates as chunk_candidates
from disttrace.algorithms._compile import compile as compile  # noqa: A004
from disttrace.algorithms._d_rtrl import DRTRLRule as DRTRLRule
from disttrace.algorithms._d_rtrl import DRTRLTrace as DRTRLTrace
from disttrace.algorithms._eprop import EPropRule as EPropRule
from disttrace.algorithms._eprop import EPropTrace as EPropTrace
from disttrace.algorithms._es_d_rtrl import ESRule as ESRule
from disttrace.algorithms._es_d_rtrl import ESTrace as ESTrace
from disttrace.algorithms._hybrid import Hybrid as Hybrid
from disttrace.algorithms._hybrid import param_trace_bytes as param_trace_bytes
from disttrace.algorithms._learner import Learner as Learner
from disttrace.algorithms._learner import UnbatchedBinding as UnbatchedBinding
from disttrace.algorithms._objects import D_RTRL as D_RTRL
from disttrace.algorithms._objects import ES_D_RTRL as ES_D_RTRL
from disttrace.algorithms._objects import ControlFlowPolicy as ControlFlowPolicy
from disttrace.algorithms._objects import ETraceAlgorithm as ETraceAlgorithm
from disttrace.algorithms._objects import ETraceGraphExecutor as ETraceGraphExecutor
from disttrace.algorithms._objects import ETraceVjpAlgorithm as ETraceVjpAlgorithm
from disttrace.algorithms._objects import IODimVjpAlgorithm as IODimVjpAlgorithm
from disttrace.algorithms._objects import MultiStepData as MultiStepData
from disttrace.algorithms._objects import NotSupportedError as NotSupportedError
from disttrace.algorithms._objects import ParamDimVjpAlgorithm as ParamDimVjpAlgorithm
from disttrace.algorithms._objects import SingleStepData as SingleStepData
from disttrace.algorithms._objects import pp_prop as pp_prop
from disttrace.algorithms._online import OnlineLearner as OnlineLearner
from disttrace.algorithms._online import OnlineState as OnlineState
from disttrace.algorithms._ostl import OSTLRecurrentLearner as OSTLRecurrentLearner
from disttrace.algorithms._registry import assign_modes as assign_modes
from disttrace.algorithms._registry import register as register
from disttrace.algorithms._registry import registered as registered
from disttrace.algorithms._rtrl import RTRL as RTRL
from disttrace.algorithms._rtrl import RTRLLearner as RTRLLearner
from disttrace.algorithms._rtrl import RTRLState as RTRLState
from disttrace.algorithms._rule import Algorithm as Algorithm
from disttrace.algorithms._rule import LearningRule as LearningRule
from disttrace.algorithms._rule import OpFactors as OpFactors
from disttrace.algorithms._rule_objects import UORO as UORO
from disttrace.algorithms._rule_objects import EProp as EProp
from disttrace.algorithms._rule_objects import OSTLFeedforward as OSTLFeedforward
from disttrace.algorithms._rule_objects import OSTLRecurrent as OSTLRecurrent
from disttrace.algorithms._rule_objects import RandomProjectionVjpAlgorithm as RandomProjectionVjpAlgorithm
from disttrace.algorithms._rule_objects import SnAp as SnAp
from disttrace.algorithms._rule_objects import ThreeFactor as ThreeFactor
from disttrace.algorithms._snap import SnApLearner as SnApLearner
from disttrace.algorithms._three_factor import ThreeFactorLearner as ThreeFactorLearner
from disttrace.algorithms._uoro import UOROLearner as UOROLearner
from disttrace.algorithms._uoro import UOROTrace as UOROTrace

__all__ = [
    "BPTT",
    "Algorithm",
    "BPTTLearner",
    "BPTTState",
    "ChunkChoice",
    "ControlFlowPolicy",
    "D_RTRL",
    "DRTRLRule",
    "DRTRLTrace",
    "ES_D_RTRL",
    "ESRule",
    "ESTrace",
    "EProp",
    "EPropRule",
    "EPropTrace",
    "ETraceAlgorithm",
    "ETraceGraphExecutor",
    "ETraceVjpAlgorithm",
    "Hybrid",
    "IODimVjpAlgorithm",
    "Learner",
    "LearningRule",
    "MultiStepData",
    "NotSupportedError",
    "OSTLFeedforward",
    "OSTLRecurrent",
    "OSTLRecurrentLearner",
    "OnlineLearner",
    "OnlineState",
    "OpFactors",
    "ParamDimVjpAlgorithm",
    "RTRL",
    "RTRLLearner",
    "RTRLState",
    "RandomProjectionVjpAlgorithm",
    "SnAp",
    "SnApLearner",
    "SingleStepData",
    "ThreeFactor",
    "ThreeFactorLearner",
    "UORO",
    "UOROLearner",
    "UOROTrace",
    "UnbatchedBinding",
    "assign_modes",
    "chunk_candidates",
    "compile",
    "param_trace_bytes",
    "pp_prop",
    "register",
    "registered",
]
