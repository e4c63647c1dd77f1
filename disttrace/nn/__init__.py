"""Layers whose weights learn online: every learnable weight goes through a trace op.

Each private module lists its public names in ``__all__``; this package re-exports
all of them, so a new layer only needs to be added to its module's ``__all__``.
"""

from disttrace.nn import (
    _conv,
    _embedding,
    _linear,
    _lora,
    _lru,
    _networks,
    _normalization,
    _readout,
    _rnn,
    _spiking,
    _spiking_layers,
    _surrogate,
)
from disttrace.nn._conv import *  # noqa: F401,F403
from disttrace.nn._embedding import *  # noqa: F401,F403
from disttrace.nn._linear import *  # noqa: F401,F403
from disttrace.nn._lora import *  # noqa: F401,F403
from disttrace.nn._lru import *  # noqa: F401,F403
from disttrace.nn._networks import *  # noqa: F401,F403
from disttrace.nn._normalization import *  # noqa: F401,F403
from disttrace.nn._readout import *  # noqa: F401,F403
from disttrace.nn._rnn import *  # noqa: F401,F403
from disttrace.nn._spiking import *  # noqa: F401,F403
from disttrace.nn._spiking_layers import *  # noqa: F401,F403
from disttrace.nn._surrogate import *  # noqa: F401,F403

__all__ = sorted(
    {
        *_conv.__all__,
        *_embedding.__all__,
        *_normalization.__all__,
        *_linear.__all__,
        *_lora.__all__,
        *_lru.__all__,
        *_networks.__all__,
        *_spiking.__all__,
        *_spiking_layers.__all__,
        *_readout.__all__,
        *_rnn.__all__,
        *_surrogate.__all__,
    }
)
