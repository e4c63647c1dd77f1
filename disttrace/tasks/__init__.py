"""Built-in streaming tasks, generated on the fly (no downloads)."""

from disttrace.tasks._evidence import EvidenceAccumulation as EvidenceAccumulation

__all__ = ["EvidenceAccumulation"]
