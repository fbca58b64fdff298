"""ApplicationWorkflow: one durable workflow per application of a cycle.

Updates (each with a validator; a refusal carries a stable code as the error type and a
zh-CN message, and leaves no trace in history): ``submit``, ``return_for_revision``,
``accept``, ``record_payment``, ``schedule_defense``, ``record_defense_result``,
``exempt_from_defense``, ``enter_meeting``, ``record_meeting_result``, ``file_objection``,
``resolve_objection``, ``withdraw``, ``disqualify``, ``change_deadlines``, ``revoke``.
Every update returns the ``ApplicationStatus`` after it.

Queries: ``status``, ``continuation``.

An ended application can still be disqualified (fraud found later, 附件3): a new run of
the same workflow id continues the ended run's record (``StartApplication.resume``, from
the ``continuation`` query) and is started together with a ``revoke`` update. It first
takes the newest record from the read model, so of two revocations at once the second
finds the application already disqualified.

Timers act by themselves: the submission cutoff (→ abandoned), the resubmission window
(→ rejected), the fee deadline (→ lapsed), the end of publicity (→ approved), and
reminders before the cutoff and the fee deadline. The timer always waits for the
*current* earliest deadline, so an extension reaches a waiting timer at once.

Side effects (read model, audit log, notifications, ban registry) are queued in order
and carried out by activities from the main loop, each with a key that makes a retry
harmless. Every transition is also published as a CloudEvent: routed to the webhook
subscriptions that want it, then delivered on one lane per subscription, in order, retried
until acknowledged. A receiver that is down delays only its own lane, and the workflow
finishes only once every lane is empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows._common import (
    ACTIVITY_RETRY,
    ACTIVITY_TIMEOUT,
    WEBHOOK_RETRY,
    WEBHOOK_TIMEOUT,
    refusal,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from models.commands import (
        ApplicationStatus,
        DeadlineChange,
        DefenseExemption,
        DefenseResult,
        DefenseSchedule,
        Disqualification,
        MeetingEnrolment,
        MeetingResult,
        ObjectionInput,
        ObjectionResolution,
        PaymentInput,
        ReviewDecision,
        StartApplication,
        SubmitInput,
        Withdrawal,
    )
    from models.errors import DomainError
    from models.lifecycle import (
        ApplicationRecord,
        DefenseSession,
        HistoryEntry,
        Lifecycle,
        Move,
        Objection,
        Payment,
        State,
    )
    from models.policy import CHINA_TZ
    from models.prechecks import run_prechecks
    from models.records import (
        ApplicationKey,
        BanQuery,
        BanRecord,
        BanStatus,
        Notification,
        TransitionRecord,
    )
    from models.webhooks import (
        ApplicationEvent,
        DeliveryResult,
        WebhookDeliveryInput,
        transition_event,
    )
    from workflows.visibility import (
        CYCLE,
        FEE_PAID,
        LEVEL,
        NEXT_DEADLINE,
        STAGE,
        SUBMISSION_ROUND,
    )


REMINDED_DEADLINES = ("submission_cutoff", "fee")

T = TypeVar("T", bound=BaseModel)


def _fmt(instant: datetime) -> str:
    return instant.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class _Due:
    at: datetime
    kind: str
    deadline: datetime
    reminder_offset: timedelta | None = None


@workflow.defn
class ApplicationWorkflow:
    @workflow.init
    def __init__(self, inp: StartApplication) -> None:
        self._inp = inp
        self._lifecycle = Lifecycle(
            inp.resume
            or ApplicationRecord(
                application_id=inp.application_id,
                cycle_id=inp.policy.cycle_id,
                level=inp.level,
                deadlines=inp.policy.deadlines,
            ),
            inp.policy,
        )
        self._effects: list[TransitionRecord | Notification | BanRecord | ApplicationEvent] = []
        self._lanes: dict[str, list[ApplicationEvent]] = {}
        """Outbound events per webhook subscription, oldest first."""
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._reminded: set[str] = set()
        self._eligibility_checked = False
        self._version = 0
        # Recorded here, not in run(): an update that arrives with the start (a withdraw
        # right away) runs before run() does, and must find the creation already logged.
        if inp.resume is None:
            self._record(self._lifecycle.created(Move(now=self._now(), actor=inp.created_by)))

    # -- run --------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: StartApplication) -> ApplicationStatus:
        if inp.resume is not None:
            await self._continue_ended_run(inp.resume)
        else:
            await self._check_ban(inp)

        while True:
            await self._drain_effects()
            if self._lifecycle.current.final and not self._effects:
                break
            due = self._next_due()
            seen = self._version
            if due is None:
                await workflow.wait_condition(self._changed_since(seen))
                continue
            now = self._now()
            if due.at > now:
                try:
                    await workflow.wait_condition(
                        self._changed_since(seen),
                        timeout=self._inp.clock.real_delay(due.at - now),
                    )
                    continue
                except TimeoutError:
                    if self._now() < due.at:
                        continue
            self._act_on(due)

        while True:
            await workflow.wait_condition(lambda: not any(self._lanes.values()))
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._effects:
                return self.status()
            await self._drain_effects()  # a revoke that came in meanwhile

    async def _check_ban(self, inp: StartApplication) -> None:
        ban = await workflow.execute_activity(
            "check_ban",
            BanQuery(person_key=inp.person_key, cycle_year=inp.policy.year),
            result_type=BanStatus,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if ban.banned:
            self._fire_system(
                "refuse_banned",
                f"因提交虚假材料被取消资格，{ban.until_year} 年（含）前不得申报",
            )
        self._eligibility_checked = True

    async def _continue_ended_run(self, record: ApplicationRecord) -> None:
        """Continue from the newest record: another run may have continued the same ended
        run meanwhile (two revocations at once), and its outcome must not be lost."""
        stored = await workflow.execute_activity(
            "newest_record",
            ApplicationKey(cycle_id=record.cycle_id, application_id=record.application_id),
            result_type=dict[str, Any],
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        newest = ApplicationRecord.model_validate(stored) if stored else None
        if newest is not None and _last_seq(newest) > _last_seq(record):
            self._lifecycle = Lifecycle(newest, self._inp.policy)
        self._publish_visibility()
        self._eligibility_checked = True

    def _changed_since(self, version: int) -> Callable[[], bool]:
        return lambda: self._version != version

    # -- query ------------------------------------------------------------------------------

    @workflow.query
    def status(self) -> ApplicationStatus:
        lc, record = self._lifecycle, self._lifecycle.record
        return ApplicationStatus(
            application_id=record.application_id,
            cycle_id=record.cycle_id,
            level=record.level,
            state=record.state,
            state_label=record.state.label,
            final=record.state.final,
            submission_round=record.submission_round,
            max_submissions=lc.policy.max_submissions,
            fee_due_cny=lc.policy.fee_for(record.level),
            fee_paid=record.fee_paid,
            now=self._now(),
            deadlines=lc.pending_deadlines(),
            allowed_actions=lc.allowed_actions(),
            findings=record.findings,
            payments=record.payments,
            defense=record.defense,
            defense_exemption=record.defense_exemption,
            meeting_id=record.meeting_id,
            publicity_ends=record.publicity_ends,
            objections=record.objections,
            history=record.history,
        )

    @workflow.query
    def continuation(self) -> StartApplication:
        """How to start a run that continues this one once it has ended (see ``revoke``)."""
        return self._inp.model_copy(update={"resume": self._lifecycle.record})

    # -- updates ----------------------------------------------------------------------------

    @workflow.update
    async def submit(self, inp: SubmitInput) -> ApplicationStatus:
        await workflow.wait_condition(lambda: self._eligibility_checked)
        return self._apply("submit", self._submit_move(inp))

    @submit.validator
    def validate_submit(self, inp: SubmitInput) -> None:
        self._check("submit", self._submit_move(inp))

    @workflow.update
    def return_for_revision(self, inp: ReviewDecision) -> ApplicationStatus:
        return self._apply("return_for_revision", self._move(inp, reason=inp.reason))

    @return_for_revision.validator
    def validate_return_for_revision(self, inp: ReviewDecision) -> None:
        self._check("return_for_revision", self._move(inp, reason=inp.reason))

    @workflow.update
    def accept(self, inp: ReviewDecision) -> ApplicationStatus:
        return self._apply("accept", self._move(inp, reason=inp.reason))

    @accept.validator
    def validate_accept(self, inp: ReviewDecision) -> None:
        self._check("accept", self._move(inp, reason=inp.reason))

    @workflow.update
    def record_payment(self, inp: PaymentInput) -> ApplicationStatus:
        if self._repeated_payment(inp):
            return self.status()
        return self._apply("record_payment", self._payment_move(inp))

    @record_payment.validator
    def validate_record_payment(self, inp: PaymentInput) -> None:
        if not self._repeated_payment(inp):
            self._check("record_payment", self._payment_move(inp))

    @workflow.update
    def schedule_defense(self, inp: DefenseSchedule) -> ApplicationStatus:
        return self._apply("schedule_defense", self._defense_move(inp))

    @schedule_defense.validator
    def validate_schedule_defense(self, inp: DefenseSchedule) -> None:
        self._check("schedule_defense", self._defense_move(inp))

    @workflow.update
    def record_defense_result(self, inp: DefenseResult) -> ApplicationStatus:
        return self._apply("record_defense_result", self._move(inp, inp.reason, passed=inp.passed))

    @record_defense_result.validator
    def validate_record_defense_result(self, inp: DefenseResult) -> None:
        self._check("record_defense_result", self._move(inp, inp.reason, passed=inp.passed))

    @workflow.update
    def exempt_from_defense(self, inp: DefenseExemption) -> ApplicationStatus:
        return self._apply("exempt_from_defense", self._move(inp, inp.reason))

    @exempt_from_defense.validator
    def validate_exempt_from_defense(self, inp: DefenseExemption) -> None:
        self._check("exempt_from_defense", self._move(inp, inp.reason))

    @workflow.update
    def enter_meeting(self, inp: MeetingEnrolment) -> ApplicationStatus:
        return self._apply("enter_meeting", self._move(inp, None, meeting_id=inp.meeting_id))

    @enter_meeting.validator
    def validate_enter_meeting(self, inp: MeetingEnrolment) -> None:
        self._check("enter_meeting", self._move(inp, None, meeting_id=inp.meeting_id))

    @workflow.update
    def record_meeting_result(self, inp: MeetingResult) -> ApplicationStatus:
        return self._apply("record_meeting_result", self._meeting_result_move(inp))

    @record_meeting_result.validator
    def validate_record_meeting_result(self, inp: MeetingResult) -> None:
        self._check("record_meeting_result", self._meeting_result_move(inp))

    @workflow.update
    def file_objection(self, inp: ObjectionInput) -> ApplicationStatus:
        return self._apply("file_objection", self._objection_move(inp))

    @file_objection.validator
    def validate_file_objection(self, inp: ObjectionInput) -> None:
        self._check("file_objection", self._objection_move(inp))

    @workflow.update
    def resolve_objection(self, inp: ObjectionResolution) -> ApplicationStatus:
        status = self._apply("resolve_objection", self._resolution_move(inp))
        if inp.upheld and inp.fraud:
            self._bar_person(inp.reason)
        return status

    @resolve_objection.validator
    def validate_resolve_objection(self, inp: ObjectionResolution) -> None:
        self._check("resolve_objection", self._resolution_move(inp))

    @workflow.update
    def withdraw(self, inp: Withdrawal) -> ApplicationStatus:
        return self._apply("withdraw", self._move(inp, inp.reason))

    @withdraw.validator
    def validate_withdraw(self, inp: Withdrawal) -> None:
        self._check("withdraw", self._move(inp, inp.reason))

    @workflow.update
    def disqualify(self, inp: Disqualification) -> ApplicationStatus:
        return self._apply_disqualify(inp)

    @disqualify.validator
    def validate_disqualify(self, inp: Disqualification) -> None:
        if not self._eligibility_checked and self._inp.resume is not None:
            raise ApplicationError(
                f"申报 {self._inp.application_id} 正在恢复办理，请稍后重试",
                type="APPLICATION_BUSY",
                non_retryable=True,
            )
        self._check("disqualify", self._move(inp, inp.reason))

    @workflow.update
    async def revoke(self, inp: Disqualification) -> ApplicationStatus:
        """``disqualify`` for a run that continues an ended one (started together with this
        update), once it holds the newest record."""
        await workflow.wait_condition(lambda: self._eligibility_checked)
        return self._apply_disqualify(inp)

    @revoke.validator
    def validate_revoke(self, inp: Disqualification) -> None:
        self._check("disqualify", self._move(inp, inp.reason))

    def _apply_disqualify(self, inp: Disqualification) -> ApplicationStatus:
        status = self._apply("disqualify", self._move(inp, inp.reason))
        self._bar_person(inp.reason)
        return status

    @workflow.update
    def change_deadlines(self, inp: DeadlineChange) -> ApplicationStatus:
        try:
            entry = self._lifecycle.change_deadlines(inp.changes(), self._move(inp, inp.reason))
        except DomainError as error:
            raise refusal(error) from None
        self._record(entry)
        return self.status()

    @change_deadlines.validator
    def validate_change_deadlines(self, inp: DeadlineChange) -> None:
        try:
            self._lifecycle.check_deadline_change(inp.changes())
        except DomainError as error:
            raise refusal(error) from None

    # -- moves ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._inp.clock.business_time(workflow.now())

    def _move(self, inp: Any, reason: str | None = None, **data: Any) -> Move:
        return Move(now=self._now(), actor=inp.actor, reason=reason, **data)

    def _submit_move(self, inp: SubmitInput) -> Move:
        try:
            findings = run_prechecks(
                inp.dossier,
                self._inp.level,
                self._inp.policy,
                submitted_on=self._now().astimezone(CHINA_TZ).date(),
            )
        except DomainError as error:
            raise refusal(error) from None
        return self._move(inp, None, findings=findings)

    def _payment_move(self, inp: PaymentInput) -> Move:
        payment = Payment(
            transaction_id=inp.transaction_id,
            amount=inp.amount,
            channel=inp.channel,
            at=self._now(),
        )
        return self._move(inp, f"交易号 {inp.transaction_id}", payment=payment)

    def _repeated_payment(self, inp: PaymentInput) -> bool:
        """Rule 3: the same transaction confirmed again counts once (and must match)."""
        earlier = self._lifecycle.duplicate_payment(inp.transaction_id)
        if earlier is None:
            return False
        if earlier.amount != inp.amount:
            raise ApplicationError(
                f"交易号 {inp.transaction_id} 已以 {earlier.amount} 元确认，与本次金额 {inp.amount} 元不符",
                type="PAYMENT_CONFLICT",
                non_retryable=True,
            )
        return True

    def _defense_move(self, inp: DefenseSchedule) -> Move:
        session = DefenseSession(
            session_id=inp.session_id, at=inp.at, place=inp.place, panel=inp.panel
        )
        return self._move(inp, f"答辩 {_fmt(inp.at)} {inp.place}", defense=session)

    def _meeting_result_move(self, inp: MeetingResult) -> Move:
        votes = (
            f"（赞成 {inp.votes_for}/{inp.experts_present}）" if inp.votes_for is not None else ""
        )
        reason = ("评审通过" if inp.passed else "评审未通过") + votes
        return self._move(inp, reason, passed=inp.passed, meeting_id=inp.meeting_id)

    def _objection_move(self, inp: ObjectionInput) -> Move:
        objection = Objection(
            objection_id=inp.objection_id,
            summary=inp.summary,
            filed_at=self._now(),
            filed_by=inp.actor,
        )
        return self._move(inp, inp.summary, objection=objection)

    def _resolution_move(self, inp: ObjectionResolution) -> Move:
        return self._move(inp, inp.reason, objection_id=inp.objection_id, upheld=inp.upheld)

    def _check(self, trigger: str, move: Move) -> None:
        try:
            self._lifecycle.check(trigger, move)
        except DomainError as error:
            raise refusal(error) from None

    def _apply(self, trigger: str, move: Move) -> ApplicationStatus:
        try:
            entries = self._lifecycle.fire(trigger, move)
        except DomainError as error:
            raise refusal(error) from None
        for entry in entries:
            self._record(entry)
        return self.status()

    def _fire_system(self, trigger: str, reason: str | None = None) -> None:
        for entry in self._lifecycle.fire(
            trigger, Move(now=self._now(), actor="system", reason=reason)
        ):
            self._record(entry)

    def _bar_person(self, reason: str) -> None:
        policy = self._inp.policy
        years = policy.banned_years(policy.year)
        self._effects.append(
            BanRecord(
                person_key=self._inp.person_key,
                application_id=self._inp.application_id,
                cycle_id=policy.cycle_id,
                from_year=years.start,
                until_year=years.stop - 1,
                reason=reason,
                at=self._now(),
            )
        )
        self._version += 1

    # -- timers -----------------------------------------------------------------------------

    def _next_due(self) -> _Due | None:
        """The earliest automatic deadline or still-relevant reminder."""
        candidates: list[_Due] = []
        entered = self._lifecycle.state_entered_at()
        for deadline in self._lifecycle.pending_deadlines():
            if not deadline.automatic:
                continue
            candidates.append(_Due(deadline.at, deadline.kind, deadline.at))
            if deadline.kind not in REMINDED_DEADLINES:
                continue
            for offset in self._inp.policy.reminder_offsets:
                at = deadline.at - offset
                if (
                    at >= entered
                    and self._reminder_key(deadline.kind, deadline.at, offset) not in self._reminded
                ):
                    candidates.append(_Due(at, deadline.kind, deadline.at, offset))
        return min(candidates, key=lambda due: due.at, default=None)

    def _act_on(self, due: _Due) -> None:
        if due.reminder_offset is not None:
            key = self._reminder_key(due.kind, due.deadline, due.reminder_offset)
            self._reminded.add(key)
            self._notify(
                f"reminder:{key}",
                f"reminder.{'submission_cutoff' if due.kind == 'submission_cutoff' else 'fee_deadline'}",
                deadline=_fmt(due.deadline),
                time_left=_time_left(due.deadline - self._now()),
                amount=str(self._inp.policy.fee_for(self._inp.level)),
            )
            return
        deadline = _fmt(due.deadline)
        trigger, reason = {
            "submission_cutoff": ("expire_cutoff", f"截至 {deadline} 未提交评审委员会"),
            "resubmission": ("expire_resubmission", f"退回后未在 {deadline} 前重新提交"),
            "fee": ("expire_fee", f"截至 {deadline} 未缴纳评审费"),
            "publicity_end": ("end_publicity", f"公示期至 {deadline} 届满"),
        }[due.kind]
        self._fire_system(trigger, reason)

    @staticmethod
    def _reminder_key(kind: str, deadline: datetime, offset: timedelta) -> str:
        return f"{kind}:{deadline.isoformat()}:{int(offset.total_seconds())}"

    # -- effects ----------------------------------------------------------------------------

    def _record(self, entry: HistoryEntry) -> None:
        record = self._lifecycle.record
        self._effects.append(
            TransitionRecord(
                application_id=record.application_id,
                cycle_id=record.cycle_id,
                workflow_id=workflow.info().workflow_id,
                seq=entry.seq,
                trigger=entry.trigger,
                source=entry.source.value,
                dest=entry.dest.value,
                actor=entry.actor,
                reason=entry.reason,
                at=entry.at,
                level=record.level,
                submission_round=record.submission_round,
                fee_paid=record.fee_paid,
                deadlines=self._lifecycle.pending_deadlines(),
                record=record.model_dump(mode="json"),
            )
        )
        self._publish_visibility()
        template = self._template_for(entry)
        if template is not None:
            self._notify(f"transition:{entry.seq}", template, **self._params_for(entry))
        self._publish_event(entry)
        self._version += 1

    def _publish_event(self, entry: HistoryEntry) -> None:
        """Queue the transition's CloudEvent for the webhook subscriptions."""
        if not workflow.patched("webhooks-v1"):
            return
        record = self._lifecycle.record
        self._effects.append(
            transition_event(
                workflow_id=workflow.info().workflow_id,
                cycle_id=record.cycle_id,
                application_id=record.application_id,
                level=record.level.value,
                seq=entry.seq,
                trigger=entry.trigger,
                source=entry.source.value,
                dest=entry.dest.value,
                dest_label=entry.dest.label,
                actor=entry.actor,
                reason=entry.reason,
                at=entry.at,
                submission_round=record.submission_round,
                fee_paid=record.fee_paid,
                deadlines=self._lifecycle.pending_deadlines(),
            )
        )

    def _publish_visibility(self) -> None:
        """Keep the search attributes in step with the record (no personal data)."""
        if not workflow.patched("visibility-v1"):
            return
        record = self._lifecycle.record
        deadlines = self._lifecycle.pending_deadlines()
        workflow.upsert_search_attributes(
            [
                CYCLE.value_set(record.cycle_id),
                STAGE.value_set(record.state.value),
                LEVEL.value_set(record.level.value),
                SUBMISSION_ROUND.value_set(record.submission_round),
                FEE_PAID.value_set(record.fee_paid),
                NEXT_DEADLINE.value_set(deadlines[0].at)
                if deadlines
                else NEXT_DEADLINE.value_unset(),
            ]
        )

    def _template_for(self, entry: HistoryEntry) -> str | None:
        if entry.trigger == "schedule_defense":
            return "defense.scheduled"
        if entry.source != entry.dest or entry.trigger == "create":
            return f"state.{entry.dest.value}"
        return None

    def _params_for(self, entry: HistoryEntry) -> dict[str, str]:
        record = self._lifecycle.record
        params = {
            "application_id": record.application_id,
            "level": record.level.label,
            "round": str(record.submission_round),
            "max_submissions": str(self._inp.policy.max_submissions),
            "amount": str(self._inp.policy.fee_for(record.level)),
            "reason": entry.reason or "详见评审委员会通知",
        }
        deadlines = self._lifecycle.pending_deadlines()
        if deadlines:
            params["deadline"] = _fmt(deadlines[0].at)
        elif entry.dest is State.abandoned:
            params["deadline"] = _fmt(record.deadlines.submission_cutoff)
        elif entry.dest is State.lapsed:
            params["deadline"] = _fmt(record.deadlines.fee_deadline)
        if record.defense is not None:
            params["place"] = record.defense.place
            params["defense_at"] = _fmt(record.defense.at)
            if entry.trigger == "schedule_defense":
                params["deadline"] = _fmt(record.defense.at)
        return params

    def _notify(self, what: str, template: str, **params: str) -> None:
        record = self._lifecycle.record
        self._effects.append(
            Notification(
                key=f"{workflow.info().workflow_id}:{what}",
                application_id=record.application_id,
                cycle_id=record.cycle_id,
                template=template,
                params={"application_id": record.application_id, **params},
                created_at=self._now(),
            )
        )
        self._version += 1

    async def _drain_effects(self) -> None:
        """Carry out queued side effects in order, one at a time."""
        while self._effects:
            effect = self._effects[0]
            if isinstance(effect, ApplicationEvent):
                await self._route(effect)
                self._effects.pop(0)
                continue
            activity = {
                TransitionRecord: "record_transition",
                Notification: "send_notification",
                BanRecord: "record_ban",
            }[type(effect)]
            await workflow.execute_activity(
                activity,
                effect,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
            self._effects.pop(0)

    async def _route(self, event: ApplicationEvent) -> None:
        subscribers = await workflow.execute_activity(
            "route_event",
            event,
            result_type=list[str],
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        for subscription_id in subscribers:
            self._lanes.setdefault(subscription_id, []).append(event)
            task = self._lane_tasks.get(subscription_id)
            if task is None or task.done():
                self._lane_tasks[subscription_id] = asyncio.create_task(
                    self._deliver_lane(subscription_id)
                )

    async def _deliver_lane(self, subscription_id: str) -> None:
        """One subscription's events, in order: the next waits for the receiver's ack."""
        lane = self._lanes[subscription_id]
        while lane:
            await workflow.execute_activity(
                "deliver_webhook",
                WebhookDeliveryInput(subscription_id=subscription_id, event=lane[0]),
                result_type=DeliveryResult,
                start_to_close_timeout=WEBHOOK_TIMEOUT,
                retry_policy=WEBHOOK_RETRY,
            )
            lane.pop(0)


def _last_seq(record: ApplicationRecord) -> int:
    return record.history[-1].seq if record.history else 0


def _time_left(delta: timedelta) -> str:
    hours = max(int(delta.total_seconds() // 3600), 0)
    days, hours = divmod(hours, 24)
    return f"{days} 天 {hours} 小时" if days else f"{hours} 小时"


__all__ = ["ApplicationWorkflow"]
