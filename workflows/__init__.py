"""Durable orchestration: one workflow per application, one per evaluation meeting."""

from workflows.application import ApplicationWorkflow
from workflows.meeting import MeetingWorkflow

WORKFLOWS = (ApplicationWorkflow, MeetingWorkflow)

__all__ = ["WORKFLOWS", "ApplicationWorkflow", "MeetingWorkflow"]
