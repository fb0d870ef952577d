"""Early stopping: a run whose loss at a rung is not among the best 1/eta of its bracket there stops.

Rungs are at min_epochs × eta^k epochs, as in Optuna's SuccessiveHalvingPruner and
Ray Tune's ASHA, and the rule is asynchronous as theirs is: a run reaching a rung is
compared with every run of its bracket that reached it before (and the runs of its own
batch, which reach it at the same epoch), so no run waits for slower ones. It keeps
training if its loss is among the best max(1, n // eta) of those n.

`successive_halving` is one bracket. `hyperband` spreads a sweep's points over the
brackets s = 0 .. s_max, bracket s starting its rungs at min_epochs × eta^s, so that
some points are judged early and some only late (Li et al., 2018); a point's bracket
is its index modulo the number of brackets (Optuna and Ray Tune hash the trial instead;
an index keeps the assignment visible and balanced). The last bracket judges its runs
once, late: Hyperband's insurance against a loss that starts slow.
"""

from __future__ import annotations

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
        return point % self.brackets(epochs)

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
