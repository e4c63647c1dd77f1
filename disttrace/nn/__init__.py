"""Layers whose weights learn online: every learnable weight goes through a trace op."""

from disttrace.nn._linear import Linear as Linear
from disttrace.nn._networks import SpikingNet as SpikingNet
from disttrace.nn._neurons import ALIF as ALIF
from disttrace.nn._neurons import LIF as LIF
from disttrace.nn._neurons import LeakyRate as LeakyRate
from disttrace.nn._readout import LeakyRateReadout as LeakyRateReadout
from disttrace.nn._rnn import GRUCell as GRUCell
from disttrace.nn._surrogate import SURROGATES as SURROGATES
from disttrace.nn._surrogate import spike as spike

__all__ = ["ALIF", "GRUCell", "LIF", "LeakyRate", "LeakyRateReadout", "Linear", "SURROGATES", "SpikingNet", "spike"]
