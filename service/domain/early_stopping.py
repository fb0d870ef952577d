"""Early stopping: a run whose loss at a rung is not among the best 1/eta of its bracket there stops.

Rungs are at min_epochs × eta^k epochs, as in Optuna's SuccessiveHalvingPruner and
Ray Tune's ASHA, and the rule is asynchronous as theirs is: a run reaching a rung is
compared with every run of its bracket that reached it before (and the runs of its own
batch, which reach it at the same epoch), so no run waits for slower ones. It keeps
training if its loss is among the best max(1, n // eta) of those n.

`successive_halving` is one bracket. `hyperband` spreads a sweep's points over the
brackets b = 0 .. s_max, bracket b starting its rungs at min_epochs × eta^b, so that
some points are judged early and some only late (Li et al., 2018). As in the paper,
bracket b gets ceil((s_max + 1) / (s + 1) × eta^s) points, s = s_max - b, in every
period of their sum, so that each bracket costs about the same epochs: most points
are judged early, a few late. Points are dealt to brackets by their index, in the order
of a smooth weighted round robin (Optuna and Ray Tune hash the trial instead; an index
keeps the deal reproducible and each stretch of points in proportion). The last
bracket judges its points once, late: Hyperband's insurance against a slow start.

A point is judged by the mean loss of its runs (its repeated seeds), which go on or
stop together.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict


class EarlyStopping(BaseModel):
    """What a sweep asks for, as `early_stopping` in its body."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["successive_halving", "hyperband"]
    min_epochs: Annotated[int, Strict(), Field(ge=1, description="epochs before the first rung")]
    eta: Annotated[int, Strict(), Field(ge=2, le=100, description="1/eta of a rung's runs go on")] = 3

    def brackets(self, epochs: int) -> int:
        """How many brackets runs of `epochs` epochs are spread over: 1, or Hyperband's s_max + 1."""
        if self.type == "successive_halving":
            return 1
        count = 1
        while self.min_epochs * self.eta**count < epochs:
            count += 1
        return count

    def bracket(self, point: int, epochs: int) -> int:
        """The bracket of the `point`-th point of its sweep."""
        deal = _deal(self.eta, self.brackets(epochs))
        return deal[point % len(deal)]

    def rungs(self, bracket: int, epochs: int) -> list[int]:
        """The epochs (counted from 1) after which a run of this bracket is judged; none at its last epoch."""
        rungs, rung = [], self.min_epochs * self.eta**bracket
        while rung < epochs:
            rungs.append(rung)
            rung *= self.eta
        return rungs

    def keeps(self, loss: float, rivals: list[float]) -> bool:
        """Whether a run with `loss` at a rung goes on, `rivals` the losses there of its bracket (its own too)."""
        best = sorted(rivals)[:max(1, len(rivals) // self.eta)]
        return loss <= best[-1]


@lru_cache
def _deal(eta: int, brackets: int) -> tuple[int, ...]:
    """One period of the brackets points are dealt to: bracket b as often as Hyperband gives it points."""
    s_max = brackets - 1
    shares = [math.ceil((s_max + 1) / (s_max - b + 1) * eta ** (s_max - b)) for b in range(brackets)]
    credit, deal = [0] * brackets, []
    for _ in range(sum(shares)):
        credit = [c + share for c, share in zip(credit, shares)]
        chosen = credit.index(max(credit))
        credit[chosen] -= sum(shares)
        deal.append(chosen)
    return tuple(deal)
