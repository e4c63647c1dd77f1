"""Online-learning algorithms over explicit pytree state, and ``compile``."""

from disttrace.algorithms._bptt import BPTTLearner as BPTTLearner
from disttrace.algorithms._bptt import BPTTState as BPTTState
from disttrace.algorithms._compile import compile as compile  # noqa: A004
from disttrace.algorithms._learner import Learner as Learner
from disttrace.algorithms._online import OnlineLearner as OnlineLearner
from disttrace.algorithms._online import OnlineState as OnlineState
from disttrace.algorithms._specs import BPTT as BPTT
from disttrace.algorithms._specs import D_RTRL as D_RTRL
from disttrace.algorithms._specs import ES_D_RTRL as ES_D_RTRL
from disttrace.algorithms._specs import Hybrid as Hybrid
from disttrace.algorithms._specs import assign_modes as assign_modes
from disttrace.algorithms._specs import param_trace_bytes as param_trace_bytes
from disttrace.algorithms._specs import pp_prop as pp_prop

__all__ = [
    "BPTT",
    "BPTTLearner",
    "BPTTState",
    "D_RTRL",
    "ES_D_RTRL",
    "Hybrid",
    "Learner",
    "OnlineLearner",
    "OnlineState",
    "assign_modes",
    "compile",
    "param_trace_bytes",
    "pp_prop",
]
