"""Early stopping's rungs: each point's mean loss at a rung and whether it went on, decided once, replayed."""

from collections.abc import Callable, Sequence
from itertools import groupby

from sqlalchemy import insert, select

from gradsweep.service.domain.records import RungLoss
from gradsweep.service.storage._rows import Aggregate, _RUNGS, _SWEEPS


class Rungs(Aggregate):
    """Early stopping's part of `Storage`."""

    def judge_rung(self, sweep_id: int, rung: int, losses: Sequence[RungLoss],
                   keeps: Callable[[float, list[float]], bool]) -> set[int]:
        """Decides which of these points (reaching `rung` together) go on; returns those that stop.

        A point judged at this rung before (by an earlier attempt of its job, or by
        another batch of its runs) gets that decision again, so a redone job stops the
        same runs where they stopped. The others are judged by `keeps(loss, rivals)`,
        rivals being the losses there of every point of the same bracket judged before
        and of these. Judgements of a sweep take turns (the sweep's row is locked), so
        each sees all those before it.
        """
        if not losses:
            return set()
        with self._transaction(write=True) as connection:
            connection.execute(select(_SWEEPS.c.id).where(_SWEEPS.c.id == sweep_id).with_for_update())
            judged = dict(connection.execute(
                select(_RUNGS.c.point, _RUNGS.c.kept).where(
                    _RUNGS.c.sweep_id == sweep_id, _RUNGS.c.point.in_([entry.point for entry in losses]),
                    _RUNGS.c.rung == rung)).all())
            new = [entry for entry in losses if entry.point not in judged]
            for bracket, group in groupby(sorted(new, key=lambda entry: entry.bracket), lambda entry: entry.bracket):
                group = list(group)
                rivals = connection.scalars(select(_RUNGS.c.loss).where(
                    _RUNGS.c.sweep_id == sweep_id, _RUNGS.c.bracket == bracket, _RUNGS.c.rung == rung)).all()
                rivals += [entry.loss for entry in group]
                for entry in group:
                    judged[entry.point] = keeps(entry.loss, rivals)
            if new:
                connection.execute(insert(_RUNGS), [
                    {"sweep_id": sweep_id, "point": entry.point, "rung": rung, "bracket": entry.bracket,
                     "loss": entry.loss, "kept": judged[entry.point]} for entry in new])
            return {point for point, kept in judged.items() if not kept}
