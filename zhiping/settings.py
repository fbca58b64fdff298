"""Settings from the environment (prefix ``ZHIPING_``); nothing is hard-coded to a host."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZHIPING_", env_file=".env", extra="ignore")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "zhiping"
    database_url: str = f"sqlite+aiosqlite:///{DATA_DIR}/zhiping.db"
    person_key_secret: SecretStr = SecretStr("zhiping-dev-secret-change-me-in-production")
    notification_channel: str = "log"
    """Where notifications go after the outbox: ``log`` (the default) or ``none``."""
    data_dir: Path = DATA_DIR
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    """On SIGTERM a worker stops polling and lets running activities finish for this long
    (keep it below the container's stop grace period)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tokens: dict[str, str] = Field(default_factory=dict)
    """Bearer token → ``role[:subject]`` (JSON in ``ZHIPING_API_TOKENS``), e.g.
    ``{"t-ops": "ops", "t-a1": "applicant:A1"}``; an applicant's subject is its application id."""
    event_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """CloudEvent ``source`` → HMAC-SHA256 secret of its ``POST /events`` (JSON in
    ``ZHIPING_EVENT_SECRETS``), e.g. ``{"platform": "…", "payment": "…"}``."""
    metrics_enabled: bool = False
    """The worker serves Prometheus metrics at ``http://metrics_host:metrics_port/metrics``
    (``ZHIPING_METRICS_ENABLED``); see ``zhiping/metrics.py``."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics endpoint binds (``ZHIPING_METRICS_HOST``): every interface, so a
    Prometheus in the container network can scrape it; ``127.0.0.1`` keeps it local."""
    metrics_port: int = 9464
    """Port of the Prometheus metrics endpoint (``ZHIPING_METRICS_PORT``)."""
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)
    """How often the application's metrics are counted again in the database
    (``ZHIPING_METRICS_REFRESH_SECONDS``)."""


@lru_cache
def get_settings() -> Settings:
    return Settings()


__all__ = ["Settings", "get_settings"]
