"""DefenseSessionWorkflow: one professional defense session (专业水平答辩, rule 4) of a cycle.

On start it schedules the session on every listed application (each then notifies its
applicant with the time and place). An application that refuses (not in
``defense_pending``, or ended) is reported in the view with its refusal code, not raised:
one wrong entry in the list must not sink the session. Ops then works through updates:

- ``record_result``: one scheduled applicant's result (a later result replaces an earlier one);
- ``close``: every scheduled applicant without a result fails as absent (缺席答辩), and every
  result is delivered to its application exactly once, durably.

Query: ``view``. The result is the final view. Sessions are small (at most 500 listed
applications), so the fan-outs fit one run's history without continue-as-new.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio import workflow

from workflows._common import ACTIVITY_RETRY, ACTIVITY_TIMEOUT, refusal

with workflow.unsafe.imports_passed_through():
    from models.defense_commands import (
        ABSENT_REASON,
        CloseDefenseSession,
        DefenseDelivery,
        DefenseOutcome,
        DefenseScheduling,
        DefenseSessionView,
        DeliveryOutcome,
        OpenDefenseSession,
        RecordedResult,
        RefusedApplicant,
        SchedulingOutcome,
    )
    from models.errors import DomainError


@workflow.defn
class DefenseSessionWorkflow:
    @workflow.init
    def __init__(self, session: OpenDefenseSession) -> None:
        self._session = session
        self._ready = False
        self._scheduled: list[str] = []
        self._refused: list[RefusedApplicant] = []
        self._results: dict[str, RecordedResult] = {}
        self._closed_at: datetime | None = None
        self._closed_by: str | None = None

    @workflow.run
    async def run(self, session: OpenDefenseSession) -> DefenseSessionView:
        await self._schedule_all()
        await workflow.wait_condition(lambda: self._closed_at is not None)
        await asyncio.gather(*(self._deliver(result) for result in self._results.values()))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    # -- query and updates ------------------------------------------------------------------

    @workflow.query
    def view(self) -> DefenseSessionView:
        session = self._session
        return DefenseSessionView(
            session_id=session.session_id,
            cycle_id=session.policy.cycle_id,
            at=session.at,
            place=session.place,
            panel=session.panel,
            opened_by=session.opened_by,
            ready=self._ready,
            scheduled=self._scheduled,
            refused=self._refused,
            results=list(self._results.values()),
            closed=self._closed_at is not None,
            closed_at=self._closed_at,
            closed_by=self._closed_by,
            results_delivered=sum(
                r.delivery is DeliveryOutcome.delivered for r in self._results.values()
            ),
        )

    @workflow.update
    def record_result(self, inp: DefenseOutcome) -> DefenseSessionView:
        self._check_result(inp)
        reason = inp.reason or ("答辩通过" if inp.passed else "答辩未通过")
        self._results[inp.application_workflow_id] = RecordedResult(
            application_workflow_id=inp.application_workflow_id,
            passed=inp.passed,
            reason=reason,
            recorded_by=inp.actor,
            recorded_at=self._now(),
        )
        return self.view()

    @record_result.validator
    def validate_record_result(self, inp: DefenseOutcome) -> None:
        self._check_result(inp)

    @workflow.update
    def close(self, inp: CloseDefenseSession) -> DefenseSessionView:
        self._check_open()
        now = self._now()
        for workflow_id in self._scheduled:
            if workflow_id not in self._results:
                self._results[workflow_id] = RecordedResult(
                    application_workflow_id=workflow_id,
                    passed=False,
                    reason=ABSENT_REASON,
                    absent=True,
                    recorded_by=inp.actor,
                    recorded_at=now,
                )
        self._closed_at = now
        self._closed_by = inp.actor
        return self.view()

    @close.validator
    def validate_close(self, inp: CloseDefenseSession) -> None:
        self._check_open()

    # -- helpers ----------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._session.clock.business_time(workflow.now())

    def _check_open(self) -> None:
        if not self._ready:
            raise refusal(
                DomainError("DEFENSE_SESSION_NOT_READY", "答辩场次正在通知申报人，请稍后")
            )
        if self._closed_at is not None:
            raise refusal(DomainError("DEFENSE_SESSION_CLOSED", "答辩场次已结束，结果不可更改"))

    def _check_result(self, inp: DefenseOutcome) -> None:
        self._check_open()
        if inp.application_workflow_id not in self._scheduled:
            raise refusal(
                DomainError(
                    "NOT_IN_DEFENSE_SESSION",
                    f"申报 {inp.application_workflow_id} 未安排在本场答辩（{self._session.session_id}）",
                    application_workflow_id=inp.application_workflow_id,
                )
            )
        if not inp.passed and inp.reason is not None and not inp.reason.strip():
            raise refusal(DomainError("REASON_REQUIRED", "请填写答辩未通过的理由"))

    async def _schedule_all(self) -> None:
        session = self._session
        outcomes = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "schedule_defense_for",
                    DefenseScheduling(
                        workflow_id=workflow_id,
                        session_id=session.session_id,
                        at=session.at,
                        place=session.place,
                        panel=session.panel,
                    ),
                    result_type=SchedulingOutcome,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                )
                for workflow_id in session.application_workflow_ids
            )
        )
        for workflow_id, outcome in zip(session.application_workflow_ids, outcomes, strict=True):
            if outcome.scheduled:
                self._scheduled.append(workflow_id)
            else:
                self._refused.append(
                    RefusedApplicant(
                        application_workflow_id=workflow_id,
                        code=outcome.code or "SCHEDULING_REFUSED",
                        message=outcome.message or "申报拒绝安排答辩",
                    )
                )
        self._ready = True

    async def _deliver(self, result: RecordedResult) -> None:
        result.delivery = await workflow.execute_activity(
            "deliver_defense_result",
            DefenseDelivery(
                workflow_id=result.application_workflow_id,
                session_id=self._session.session_id,
                passed=result.passed,
                reason=result.reason,
            ),
            result_type=DeliveryOutcome,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )


__all__ = ["DefenseSessionWorkflow"]
