"""Durable orchestration: one workflow per application."""

from workflows.application import ApplicationWorkflow

WORKFLOWS = (ApplicationWorkflow,)

__all__ = ["WORKFLOWS", "ApplicationWorkflow"]
