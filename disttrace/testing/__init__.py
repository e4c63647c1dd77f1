"""Helpers for testing learners against the BPTT oracle, and the tolerance of exact comparisons."""

from disttrace.testing._oracle import cosine as cosine
from disttrace.testing._oracle import flat as flat
from disttrace.testing._oracle import gradients as gradients
from disttrace.testing._tolerances import EXACT_F64_ATOL as EXACT_F64_ATOL

__all__ = ["EXACT_F64_ATOL", "cosine", "flat", "gradients"]
