"""The performance issue's targets, as rows a reader checks: what is measured, the goal, the value, met or not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .report import Table


@dataclass(frozen=True)
class Target:
    """``value`` must reach ``goal`` (or, with ``at_most``, stay at or under it). A value of 0 was not measured."""

    what: str
    value: float
    goal: float
    at_most: bool = False
    unit: str = "×"

    @property
    def met(self) -> bool | None:
        if not self.value:
            return None
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    def _text(self, value: float) -> str:
        return f"{value:.2f}×" if self.unit == "×" else f"{value:,.0f} {self.unit}"

    def row(self) -> list[str]:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[self.met]
        goal = ("≤ " if self.at_most else "≥ ") + self._text(self.goal)
        return [self.what, goal, self._text(self.value) if self.value else "n/a", verdict]


def targets_table(targets: Sequence[Target], title: str = "Targets of the performance issue") -> Table:
    return Table(title, ["target", "goal", "measured", "met"], [target.row() for target in targets])
