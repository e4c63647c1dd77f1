"""Helpers for testing learners against the BPTT oracle."""

from disttrace.testing._oracle import cosine as cosine
from disttrace.testing._oracle import flat as flat
from disttrace.testing._oracle import gradients as gradients

__all__ = ["cosine", "flat", "gradients"]
