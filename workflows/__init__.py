"""Durable orchestration: one workflow per application, per evaluation meeting, per defense session,
per cycle-wide deadline extension."""

from workflows.application import ApplicationWorkflow
from workflows.defense import DefenseSessionWorkflow
from workflows.extension import DeadlineExtensionWorkflow
from workflows.meeting import MeetingWorkflow
from workflows.webhooks import WebhookRegistryWorkflow

WORKFLOWS = (
    ApplicationWorkflow,
    DeadlineExtensionWorkflow,
    DefenseSessionWorkflow,
    MeetingWorkflow,
    WebhookRegistryWorkflow,
)

__all__ = [
    "WORKFLOWS",
    "ApplicationWorkflow",
    "DeadlineExtensionWorkflow",
    "DefenseSessionWorkflow",
    "MeetingWorkflow",
    "WebhookRegistryWorkflow",
]
