"""
The validated configuration of one master, as immutable values.
"""

from __future__ import annotations

import enum
from pathlib import Path

from attrs import frozen


class Role(enum.Enum):
    """
    What a token may do. Viewers read; users (artists, pipeline tools)
    submit jobs and steer the jobs they own; operators steer every job and
    agent; admins do everything, accounts included; agents only speak
    talkback and report their work.
    """

    viewer = "viewer"
    user = "user"
    operator = "operator"
    admin = "admin"
    agent = "agent"


@frozen
class TokenConfig:
    name: str
    role: Role
    # Only the SHA-256 of a token is kept in memory, whichever way it came.
    sha256: bytes


@frozen
class HTTPConfig:
    listen: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1:backlog=1024",)
    public_metrics: bool = False
    access_log: bool = True
    #: Peers whose X-Forwarded-For is believed (the load balancers).
    trusted_proxies: tuple[str, ...] = ()


@frozen
class PoolConfig:
    min: int = 2
    max: int = 10
    acquire_timeout_s: float = 5.0


@frozen
class DatabaseConfig:
    embedded_data_dir: Path | None
    dsn: str | None
    pool: PoolConfig = PoolConfig()
    connect_timeout_s: float = 5.0
    statement_timeout_s: float = 30.0
    reconnect_max_s: float = 10.0


@frozen
class LimitsConfig:
    max_body_bytes: int = 1024 * 1024
    max_frames_per_job: int = 1_000_000
    max_log_lines_per_attempt: int = 1_000_000
    max_json_depth: int = 32


@frozen
class TalkbackConfig:
    heartbeat_s: float = 10.0
    agent_timeout_s: float = 45.0
    lost_grace_s: float = 45.0
    max_message_bytes: int = 1024 * 1024
    max_errors: int = 20
    flush_s: float = 1.0
    reap_interval_s: float = 5.0
    hello_timeout_s: float = 10.0


@frozen
class PreemptionConfig:
    enabled: bool = False
    priority_gap: int = 20
    min_runtime_s: float = 60.0


@frozen
class SchedulerConfig:
    sweep_s: float = 5.0
    assign_timeout_s: float = 60.0
    blocklist_after: int = 3
    max_batch: int = 500
    preemption: PreemptionConfig = PreemptionConfig()
    #: Place a layer's tasks by the 95th percentile of the memory its
    #: attempts used, not by its requirements.ram_mb (docs/scheduler.md).
    learn_requirements: bool = False


@frozen
class WebhooksConfig:
    retry_for_s: float = 24 * 3600.0
    timeout_s: float = 10.0
    concurrency: int = 4
    max_backoff_s: float = 600.0
    poll_s: float = 1.0


@frozen
class RetentionConfig:
    #: Delete the logs of attempts ended this many days ago (None: keep).
    logs_days: float | None = None
    #: Delete finished jobs (with their tasks, attempts and logs) this many
    #: days after they finished (None: keep).
    jobs_days: float | None = None
    #: Delete the farm's hourly history (farm_history) of hours this many
    #: days old (None: keep); its totals stay.
    history_days: float | None = None
    #: Write each job to this directory as one JSON document before
    #: retention deletes it (None: no archive).
    archive_dir: Path | None = None
    #: Whether the archive written before deletion carries the logs.
    archive_logs: bool = False
    #: Compress an attempt's log once the attempt has ended.
    compress_logs: bool = True
    #: How often retention and log compression run.
    interval_s: float = 60.0
    #: The most one retention statement may hold its locks (lock_timeout and
    #: the size of its batches are set from it).
    max_lock_ms: int = 200
    #: Tasks deleted by one statement.
    batch_tasks: int = 2000
    #: The share of its time a job's deletion spends in its transactions:
    #: after each it waits so long that it holds the database this share of
    #: the time, leaving the rest to the scheduler (1: no pause).
    duty: float = 0.5


@frozen
class MasterConfig:
    name: str
    heartbeat_s: float = 10.0
    expire_s: float = 60.0


@frozen
class Config:
    source: str
    master: MasterConfig
    http: HTTPConfig
    database: DatabaseConfig
    tokens: tuple[TokenConfig, ...]
    limits: LimitsConfig
    talkback: TalkbackConfig = TalkbackConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    retention: RetentionConfig = RetentionConfig()
    #: How long a master trusts what it read of a database token.
    auth_cache_s: float = 5.0
    #: How long a dashboard session lasts (auth.session_hours).
    auth_session_s: float = 12 * 3600.0
