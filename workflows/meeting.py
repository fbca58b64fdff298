"""MeetingWorkflow: one evaluation meeting (评审会) of a cycle.

On start it enrols every application of the cycle waiting for the meeting (found through
visibility) and gives each an anonymous code. The committee then works through updates:

- ``record_attendance``: the experts present (quorum: the policy's fraction of the committee);
- ``record_ballot``: one expert's votes by candidate code (a later ballot replaces earlier
  votes, which is how a tie on the cap line is re-voted);
- ``close``: tally, apply the pass-rate cap, and deliver every result to its application
  exactly once, durably, which starts each passed candidate's publicity.

Query: ``view`` (blind: codes and levels only). The result is the final blind view. The
fan-out continues as new every ``delivery_batch`` results, so a meeting with hundreds of
candidates keeps a bounded history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows._common import ACTIVITY_RETRY, ACTIVITY_TIMEOUT, refusal

with workflow.unsafe.imports_passed_through():
    from models.errors import DomainError
    from models.meeting import (
        Candidate,
        MeetingRules,
        Tally,
        anonymous_codes,
        cap_for,
        check_quorum,
        decide,
        quorum_required,
    )
    from models.meeting_commands import (
        Attendance,
        Ballot,
        CandidateRef,
        CloseMeeting,
        Enrolled,
        Enrolment,
        FindCandidates,
        MeetingRun,
        MeetingView,
        ResultDelivery,
    )


@workflow.defn
class MeetingWorkflow:
    @workflow.init
    def __init__(self, run: MeetingRun) -> None:
        self._meeting = run.meeting
        self._state: Enrolled | None = run.carried
        self._closing = False

    @workflow.run
    async def run(self, run: MeetingRun) -> MeetingView:
        if self._state is None:
            self._state = await self._enrol()
        state = self._state
        await workflow.wait_condition(lambda: state.closed_at is not None)
        delivered_now = 0
        for candidate in state.candidates:
            if candidate.code in state.delivered:
                continue
            if delivered_now >= self._meeting.delivery_batch:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(MeetingRun(meeting=self._meeting, carried=state))
            await self._deliver(candidate, state)
            delivered_now += 1
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    # -- query and updates ------------------------------------------------------------------

    @workflow.query
    def view(self) -> MeetingView:
        policy, meeting = self._meeting.policy, self._meeting
        state = self._state or Enrolled(candidates=[], workflow_ids={})
        counts = {
            level: sum(1 for c in state.candidates if c.level is level)
            for level in policy.pass_rate_caps
        }
        return MeetingView(
            meeting_id=meeting.meeting_id,
            cycle_id=policy.cycle_id,
            held_at=meeting.held_at,
            rules=MeetingRules(
                committee_size=meeting.committee_size,
                quorum_required=quorum_required(meeting.committee_size, policy),
                vote_pass_fraction=str(policy.vote_pass_fraction),
                caps={level.value: cap_for(level, n, policy) or 0 for level, n in counts.items()},
            ),
            experts_present=len(state.present),
            quorum_met=len(state.present) >= quorum_required(meeting.committee_size, policy),
            candidates=state.candidates,
            ballots_received=len(state.ballots),
            tallies=state.tallies,
            closed=state.closed_at is not None,
            results_delivered=len(state.delivered),
            enrolled=self._state is not None,
        )

    @workflow.update
    def record_attendance(self, inp: Attendance) -> MeetingView:
        state = self._open_state()
        state.present = sorted(set(inp.experts_present))
        state.ballots = {e: b for e, b in state.ballots.items() if e in state.present}
        return self.view()

    @record_attendance.validator
    def validate_record_attendance(self, inp: Attendance) -> None:
        self._open_state()
        if len(set(inp.experts_present)) > self._meeting.committee_size:
            raise ApplicationError(
                f"到会专家 {len(set(inp.experts_present))} 人，超过评审委员会人数 {self._meeting.committee_size} 人",
                type="TOO_MANY_EXPERTS",
                non_retryable=True,
            )

    @workflow.update
    def record_ballot(self, inp: Ballot) -> MeetingView:
        state = self._open_state()
        state.ballots[inp.expert_id] = {**state.ballots.get(inp.expert_id, {}), **inp.votes}
        return self.view()

    @record_ballot.validator
    def validate_record_ballot(self, inp: Ballot) -> None:
        state = self._open_state()
        self._check(
            lambda: check_quorum(
                len(state.present), self._meeting.committee_size, self._meeting.policy
            )
        )
        if inp.expert_id not in state.present:
            raise ApplicationError(
                f"专家 {inp.expert_id} 未登记到会，不能投票",
                type="EXPERT_NOT_PRESENT",
                non_retryable=True,
            )
        unknown = sorted(set(inp.votes) - {c.code for c in state.candidates})
        if unknown:
            raise ApplicationError(
                f"没有这些候选人编号：{'、'.join(unknown)}",
                type="UNKNOWN_CANDIDATE",
                non_retryable=True,
            )

    @workflow.update
    def close(self, inp: CloseMeeting) -> MeetingView:
        state = self._open_state()
        state.tallies = self._tally(state)
        state.closed_at = workflow.now()
        return self.view()

    @close.validator
    def validate_close(self, inp: CloseMeeting) -> None:
        state = self._open_state()
        self._check(
            lambda: check_quorum(
                len(state.present), self._meeting.committee_size, self._meeting.policy
            )
        )
        missing = sorted(
            expert
            for expert in state.present
            if any(c.code not in state.ballots.get(expert, {}) for c in state.candidates)
        )
        if missing:
            raise ApplicationError(
                f"以下到会专家尚未对全部候选人投票：{'、'.join(missing)}",
                {"experts": missing},
                type="BALLOTS_INCOMPLETE",
                non_retryable=True,
            )
        self._tally(state)

    # -- helpers ----------------------------------------------------------------------------

    def _open_state(self) -> Enrolled:
        if self._state is None:
            raise ApplicationError(
                "评审会正在登记候选人，请稍后", type="MEETING_NOT_READY", non_retryable=True
            )
        if self._state.closed_at is not None:
            raise ApplicationError(
                "评审会已闭会，结果不可更改", type="MEETING_CLOSED", non_retryable=True
            )
        return self._state

    def _check(self, rule: Callable[[], None]) -> None:
        try:
            rule()
        except DomainError as error:
            raise refusal(error) from None

    def _tally(self, state: Enrolled) -> list[Tally]:
        try:
            return decide(state.candidates, state.ballots, len(state.present), self._meeting.policy)
        except DomainError as error:
            raise refusal(error) from None

    async def _enrol(self) -> Enrolled:
        refs: list[CandidateRef] = await workflow.execute_activity(
            "find_waiting_applications",
            FindCandidates(cycle_id=self._meeting.policy.cycle_id),
            result_type=list[CandidateRef],
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        meeting_id = self._meeting.meeting_id
        enrolled = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "enrol_candidate",
                    Enrolment(workflow_id=ref.workflow_id, meeting_id=meeting_id),
                    result_type=bool,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                )
                for ref in refs
            )
        )
        kept = [ref for ref, ok in zip(refs, enrolled, strict=True) if ok]
        codes = anonymous_codes(
            meeting_id, [ref.workflow_id for ref in kept], self._meeting.code_secret
        )
        candidates = sorted(
            (Candidate(code=codes[ref.workflow_id], level=ref.level) for ref in kept),
            key=lambda c: c.code,
        )
        return Enrolled(
            candidates=candidates,
            workflow_ids={codes[ref.workflow_id]: ref.workflow_id for ref in kept},
        )

    async def _deliver(self, candidate: Candidate, state: Enrolled) -> None:
        tally = next(t for t in state.tallies if t.code == candidate.code)
        await workflow.execute_activity(
            "deliver_meeting_result",
            ResultDelivery(
                workflow_id=state.workflow_ids[candidate.code],
                meeting_id=self._meeting.meeting_id,
                passed=tally.passed,
                votes_for=tally.votes_for,
                experts_present=len(state.present),
            ),
            result_type=str,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        state.delivered.append(candidate.code)


__all__ = ["MeetingWorkflow"]
