"""Activities that reach other workflows: find candidates, enrol them, schedule defenses,
deliver results, extend deadlines.

A workflow cannot send an Update to another workflow, so these activities do it through
the client, each with a deterministic update id: a retried activity (a worker killed
half-way through a fan-out) applies its update once.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from models.commands import (
    ApplicationStatus,
    DefenseResult,
    DefenseSchedule,
    MeetingEnrolment,
    MeetingResult,
    application_workflow_id,
)
from models.defense_commands import (
    DefenseDelivery,
    DefenseScheduling,
    DeliveryOutcome,
    SchedulingOutcome,
    defense_actor,
)
from models.extension_commands import (
    ApplyDeadlineChange,
    ChangeOutcome,
    DeadlineChangeResult,
    FindRunningApplications,
)
from models.lifecycle import State
from models.meeting_commands import CandidateRef, Enrolment, FindCandidates, ResultDelivery
from models.policy import Level
from workflows.application import ApplicationWorkflow
from workflows.visibility import LEVEL

log = logging.getLogger(__name__)


class CoordinationActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    def all(self) -> list[Any]:
        return [
            self.find_waiting_applications,
            self.enrol_candidate,
            self.deliver_meeting_result,
            self.schedule_defense_for,
            self.deliver_defense_result,
            self.find_running_applications,
            self.apply_deadline_change,
        ]

    @activity.defn
    async def find_waiting_applications(self, query: FindCandidates) -> list[CandidateRef]:
        """Every application of the cycle waiting for the meeting, found through visibility."""
        found: list[CandidateRef] = []
        visibility = (
            f"Cycle = '{query.cycle_id}' AND Stage = '{State.awaiting_meeting.value}'"
            " AND ExecutionStatus = 'Running'"
        )
        async for execution in self._client.list_workflows(visibility):
            level = execution.typed_search_attributes.get(LEVEL)
            if level is not None:
                found.append(CandidateRef(workflow_id=execution.id, level=Level(level)))
        return sorted(found, key=lambda ref: ref.workflow_id)

    @activity.defn
    async def enrol_candidate(self, enrolment: Enrolment) -> bool:
        """Move one application into the meeting; False if it no longer waits for it."""
        handle = self._client.get_workflow_handle_for(
            ApplicationWorkflow.run, enrolment.workflow_id
        )
        try:
            await handle.execute_update(
                ApplicationWorkflow.enter_meeting,
                MeetingEnrolment(
                    meeting_id=enrolment.meeting_id, actor=f"meeting:{enrolment.meeting_id}"
                ),
                id=f"{enrolment.meeting_id}:enter",
            )
            return True
        except WorkflowUpdateFailedError as error:
            log.info("not enrolled %s: %s", enrolment.workflow_id, error.cause)
            return False
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:  # completed meanwhile (withdrawn, …)
                return False
            raise

    @activity.defn
    async def deliver_meeting_result(self, delivery: ResultDelivery) -> str:
        """Tell one application its result, exactly once (``delivered``, ``refused``, ``closed``)."""
        handle = self._client.get_workflow_handle_for(ApplicationWorkflow.run, delivery.workflow_id)
        try:
            await handle.execute_update(
                ApplicationWorkflow.record_meeting_result,
                MeetingResult(
                    meeting_id=delivery.meeting_id,
                    passed=delivery.passed,
                    votes_for=delivery.votes_for,
                    experts_present=delivery.experts_present,
                    actor=f"meeting:{delivery.meeting_id}",
                ),
                id=f"{delivery.meeting_id}:result",
            )
            return "delivered"
        except WorkflowUpdateFailedError as error:
            log.info("result refused by %s: %s", delivery.workflow_id, error.cause)
            return "refused"
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
        # The application has ended: did it end by this very result (a retry after success)?
        status: ApplicationStatus = await handle.query(ApplicationWorkflow.status)
        told = _already_told(status, "record_meeting_result", f"meeting:{delivery.meeting_id}")
        return "delivered" if told else "closed"

    @activity.defn
    async def schedule_defense_for(self, scheduling: DefenseScheduling) -> SchedulingOutcome:
        """Schedule one application into a defense session; a refusal is an outcome, not an error."""
        handle = self._client.get_workflow_handle_for(
            ApplicationWorkflow.run, scheduling.workflow_id
        )
        try:
            await handle.execute_update(
                ApplicationWorkflow.schedule_defense,
                DefenseSchedule(
                    session_id=scheduling.session_id,
                    at=scheduling.at,
                    place=scheduling.place,
                    panel=scheduling.panel,
                    actor=defense_actor(scheduling.session_id),
                ),
                id=f"{scheduling.session_id}:schedule",
            )
            return SchedulingOutcome(scheduled=True)
        except WorkflowUpdateFailedError as error:
            log.info("defense not scheduled for %s: %s", scheduling.workflow_id, error.cause)
            cause = error.cause
            if isinstance(cause, ApplicationError):
                return SchedulingOutcome(
                    scheduled=False, code=cause.type or "UPDATE_REFUSED", message=cause.message
                )
            return SchedulingOutcome(scheduled=False, code="UPDATE_REFUSED", message=str(cause))
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
        return await self._missing(handle)

    @activity.defn
    async def deliver_defense_result(self, delivery: DefenseDelivery) -> DeliveryOutcome:
        """Tell one application its defense result, exactly once."""
        handle = self._client.get_workflow_handle_for(ApplicationWorkflow.run, delivery.workflow_id)
        try:
            status: ApplicationStatus = await handle.query(ApplicationWorkflow.status)
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return DeliveryOutcome.closed
            raise
        if _told_defense(status, delivery.session_id):  # a retry after success
            return DeliveryOutcome.delivered
        if status.defense is None or status.defense.session_id != delivery.session_id:
            log.info("%s moved to another defense session", delivery.workflow_id)
            return DeliveryOutcome.rescheduled
        try:
            await handle.execute_update(
                ApplicationWorkflow.record_defense_result,
                DefenseResult(
                    passed=delivery.passed,
                    reason=delivery.reason,
                    actor=defense_actor(delivery.session_id),
                ),
                id=f"{delivery.session_id}:result",
            )
            return DeliveryOutcome.delivered
        except WorkflowUpdateFailedError as error:
            log.info("defense result refused by %s: %s", delivery.workflow_id, error.cause)
            return DeliveryOutcome.refused
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
        # The application has ended: did it end by this very result (a retry after success)?
        status = await handle.query(ApplicationWorkflow.status)
        told = _told_defense(status, delivery.session_id)
        return DeliveryOutcome.delivered if told else DeliveryOutcome.closed

    # -- cycle-wide deadline extension (DeadlineExtensionWorkflow) --------------------------

    @activity.defn
    async def find_running_applications(self, query: FindRunningApplications) -> list[str]:
        """The application ids of every running application of the cycle, through visibility.

        Visibility, not the read model: the read model is written by activities and may lag.
        """
        prefix = application_workflow_id(query.cycle_id, "")
        visibility = (
            f"WorkflowType = '{ApplicationWorkflow.__name__}' AND Cycle = '{query.cycle_id}'"
            " AND ExecutionStatus = 'Running'"
        )
        found = {
            execution.id.removeprefix(prefix)
            async for execution in self._client.list_workflows(visibility)
            if execution.id.startswith(prefix)
        }
        return sorted(found)

    @activity.defn
    async def apply_deadline_change(self, apply: ApplyDeadlineChange) -> DeadlineChangeResult:
        """Give one application the change, exactly once; an ended application is skipped.

        The update id is the change's: a retry after success (also after the application has
        ended since) gets the first answer back from the server instead of a second change.
        """
        handle = self._client.get_workflow_handle_for(
            ApplicationWorkflow.run, application_workflow_id(apply.cycle_id, apply.application_id)
        )
        try:
            await handle.execute_update(
                ApplicationWorkflow.change_deadlines, apply.change, id=apply.update_id
            )
            return DeadlineChangeResult(outcome=ChangeOutcome.changed)
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            code = cause.type if isinstance(cause, ApplicationError) else None
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            log.info("deadline change refused by %s: %s", handle.id, cause)
            if code == "TRANSITION_NOT_ALLOWED":  # it reached a final state meanwhile
                return DeadlineChangeResult(outcome=ChangeOutcome.skipped, code=code)
            return DeadlineChangeResult(
                outcome=ChangeOutcome.refused, code=code or "UPDATE_REFUSED", message=message
            )
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
        # Completed before this change reached it (an applied id would have answered).
        return DeadlineChangeResult(outcome=ChangeOutcome.skipped, code="APPLICATION_CLOSED")

    @staticmethod
    async def _missing(
        handle: WorkflowHandle[ApplicationWorkflow, ApplicationStatus],
    ) -> SchedulingOutcome:
        """Why an application could not be reached: it has ended, or it never existed."""
        try:
            await handle.describe()
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return SchedulingOutcome(
                    scheduled=False,
                    code="APPLICATION_NOT_FOUND",
                    message=f"没有这份申报（{handle.id}）",
                )
            raise
        return SchedulingOutcome(
            scheduled=False,
            code="APPLICATION_ENDED",
            message=f"申报（{handle.id}）已办结，不能安排答辩",
        )


def _already_told(status: ApplicationStatus, trigger: str, actor: str) -> bool:
    """Whether ``actor`` already applied ``trigger``: a retried delivery after success."""
    return any(entry.trigger == trigger and entry.actor == actor for entry in status.history)


def _told_defense(status: ApplicationStatus, session_id: str) -> bool:
    return _already_told(status, "record_defense_result", defense_actor(session_id))


__all__ = ["CoordinationActivities"]
