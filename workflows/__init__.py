"""Durable orchestration: one workflow per application, per evaluation meeting, per defense session."""

from workflows.application import ApplicationWorkflow
from workflows.defense import DefenseSessionWorkflow
from workflows.meeting import MeetingWorkflow
from workflows.webhooks import WebhookRegistryWorkflow

WORKFLOWS = (ApplicationWorkflow, DefenseSessionWorkflow, MeetingWorkflow, WebhookRegistryWorkflow)

__all__ = [
    "WORKFLOWS",
    "ApplicationWorkflow",
    "DefenseSessionWorkflow",
    "MeetingWorkflow",
    "WebhookRegistryWorkflow",
]
