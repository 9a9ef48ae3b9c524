"""What every machine-label source returns: a value, a calibrated confidence and whether it is sure."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MachineLabel", "UNSURE_VALUE"]

UNSURE_VALUE = -1  # stored value when a source can say nothing (no usable face)


@dataclass(frozen=True)
class MachineLabel:
    """One source's answer for one attribute of one face.

    ``confidence`` is the calibrated probability that ``value`` is right; ``sure`` says it reached the source's
    tuned threshold for that attribute (the threshold chosen on the tuning split so sure answers are right at
    least 90% of the time where that is reachable). ``value`` is ``UNSURE_VALUE`` when there is no answer at all.
    """

    value: int
    confidence: float
    sure: bool
    source: str  # annotator name, "model:<source>@<version>"
