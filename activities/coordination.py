"""Activities that reach other workflows: find candidates, enrol them, deliver results.

A workflow cannot send an Update to another workflow, so these activities do it through
the client, each with a deterministic update id: a retried activity (a worker killed
half-way through a fan-out) applies its update once.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from models.commands import ApplicationStatus, MeetingEnrolment, MeetingResult
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
        return [self.find_waiting_applications, self.enrol_candidate, self.deliver_meeting_result]

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
        told = any(
            entry.trigger == "record_meeting_result"
            and entry.actor == f"meeting:{delivery.meeting_id}"
            for entry in status.history
        )
        return "delivered" if told else "closed"


__all__ = ["CoordinationActivities"]
