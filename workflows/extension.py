"""DeadlineExtensionWorkflow: one deadline change taken to every running application of a cycle.

Ops changes a cycle's deadlines once (``zhiping cycles extend-deadlines``,
``POST /cycles/{cycle}/deadline-extensions``); this workflow carries the change to each
application durably, so a caller that crashes half-way leaves no application behind. Its
workflow id is derived from the cycle and the change, so starting the same change again
attaches to this run (or returns its result) instead of doing it twice.

- It finds the cycle's running applications through visibility (``Cycle`` search attribute),
  not the read model, which may lag behind.
- Each application gets the change as a ``change_deadlines`` update with one update id
  derived from the change, through an activity: a retried activity (a worker lost
  half-way) applies it once.
- An application that ended meanwhile is skipped; any other refusal is listed with its code.
  The caller checks the change against the deadlines the applications started with before
  starting this workflow, so such a refusal only comes from an application whose deadlines
  were extended beyond this change since (one by one, or by an earlier extension).
- ``batch_size`` applications are told concurrently per run, then the workflow continues
  as new, so a cycle with hundreds of applications keeps a bounded history.

No updates. Query: ``progress`` (the result so far). The result is the final report.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows._common import ACTIVITY_RETRY, ACTIVITY_TIMEOUT

with workflow.unsafe.imports_passed_through():
    from models.extension_commands import (
        ApplyDeadlineChange,
        ChangeOutcome,
        DeadlineChangeResult,
        ExtendDeadlines,
        ExtensionProgress,
        ExtensionReport,
        FindRunningApplications,
        RefusedApplication,
    )


@workflow.defn
class DeadlineExtensionWorkflow:
    @workflow.init
    def __init__(self, inp: ExtendDeadlines) -> None:
        self._inp = inp
        self._progress: ExtensionProgress | None = inp.carried

    @workflow.run
    async def run(self, inp: ExtendDeadlines) -> ExtensionReport:
        if self._progress is None:
            self._progress = ExtensionProgress(pending=await self._find_applications())
        progress = self._progress
        if progress.pending:
            batch = progress.pending[: inp.batch_size]
            await asyncio.gather(*(self._apply(application_id) for application_id in batch))
            del progress.pending[: len(batch)]
            if progress.pending:
                workflow.continue_as_new(inp.model_copy(update={"carried": progress}))
        return self.progress()

    @workflow.query
    def progress(self) -> ExtensionReport:
        progress = self._progress or ExtensionProgress(pending=[])
        done = {*progress.changed, *progress.skipped, *(r.application_id for r in progress.refused)}
        return ExtensionReport(
            cycle_id=self._inp.cycle_id,
            update_id=self._inp.update_id,
            changed=sorted(progress.changed),
            skipped=sorted(progress.skipped),
            refused=sorted(progress.refused, key=lambda r: r.application_id),
            remaining=sum(1 for application_id in progress.pending if application_id not in done),
        )

    async def _find_applications(self) -> list[str]:
        found: list[str] = await workflow.execute_activity(
            "find_running_applications",
            FindRunningApplications(cycle_id=self._inp.cycle_id),
            result_type=list[str],
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return found

    async def _apply(self, application_id: str) -> None:
        """Tell one application, and note its answer as soon as it comes (for ``progress``)."""
        result: DeadlineChangeResult = await workflow.execute_activity(
            "apply_deadline_change",
            ApplyDeadlineChange(
                cycle_id=self._inp.cycle_id,
                application_id=application_id,
                change=self._inp.change,
                update_id=self._inp.update_id,
            ),
            result_type=DeadlineChangeResult,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        assert self._progress is not None
        if result.outcome is ChangeOutcome.changed:
            self._progress.changed.append(application_id)
        elif result.outcome is ChangeOutcome.skipped:
            self._progress.skipped.append(application_id)
        else:
            self._progress.refused.append(
                RefusedApplication(
                    application_id=application_id,
                    code=result.code or "UPDATE_REFUSED",
                    message=result.message or "",
                )
            )


__all__ = ["DeadlineExtensionWorkflow"]
