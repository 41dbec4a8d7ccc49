"""The cost report use case: who may see which records' costs, over which window."""

from __future__ import annotations

from datetime import datetime, timedelta

from chalicelib.domain.costs import CostReport, check_window, cost_report
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.identity import Caller
from chalicelib.persistence.repository import InstanceRepository
from chalicelib.services.ports import Clock


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class CostService:
    def __init__(self, repository: InstanceRepository, clock: Clock) -> None:
        self.repository = repository
        self.clock = clock

    def report(
        self,
        caller: Caller,
        start: datetime | None,
        end: datetime | None,
        group_by: str,
        user_id: str | None = None,
    ) -> CostReport:
        """A user's own costs; an operator's view of everyone's, or of `user_id`'s. The
        window defaults to the current UTC month up to now."""
        now = self.clock()
        owner: str | None = caller.user_id
        if caller.is_admin:
            owner = user_id
        elif user_id is not None and user_id != caller.user_id:
            raise ValidationError(
                "Only operators may see another user's costs; omit userId.",
                fields=[{"field": "userId", "problem": "not yours", "allowed": caller.user_id}],
            )
        end = end or now
        start = start or month_start(min(end, now) - timedelta(microseconds=1))
        check_window(start, end)
        records = self.repository.billed_between(start, end, owner)
        return cost_report(records, start, end, group_by, now)
