"""One part to send, as a source hands it out."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.plan import Part
from .body import PartBuffer

__all__ = ["PartItem"]


@dataclass(frozen=True, slots=True)
class PartItem:
    """A part, and for a stream its bytes (a pooled buffer held until the part is acknowledged or given up)."""

    part: Part
    buffer: PartBuffer | None = None
