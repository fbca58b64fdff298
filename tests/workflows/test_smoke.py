from workflows import ApplicationWorkflow
from datetime import datetime
from decimal import Decimal

from models.commands import PaymentInput, ReviewDecision, SubmitInput
from models.lifecycle import State
from models.policy import CHINA_TZ, Level
from zhiping.samples import complete_dossier


async def test_smoke(harness, policy):
    await harness.anchor(datetime(2024, 8, 1, 9, 0, tzinfo=CHINA_TZ))
    handle = await harness.start(level=Level.intermediate)
    status = await handle.execute_update(ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(policy, Level.intermediate)))
    assert status.state is State.under_review
    status = await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
    assert status.state is State.fee_due
    status = await handle.execute_update(ApplicationWorkflow.record_payment, PaymentInput(transaction_id="t1", amount=Decimal("400")))
    assert status.state is State.awaiting_meeting
    print(status.model_dump_json(indent=1)[:3000])
