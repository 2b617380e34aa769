"""
The master's configuration: one YAML file, validated completely before
anything starts.
"""

from ._load import DSN_ENV, ConfigError, loadConfig, parseConfig
from ._model import (
    Config,
    DatabaseConfig,
    HTTPConfig,
    LimitsConfig,
    MasterConfig,
    PoolConfig,
    PreemptionConfig,
    RetentionConfig,
    Role,
    SchedulerConfig,
    TalkbackConfig,
    TokenConfig,
    WebhooksConfig,
)

__all__ = [
    "DSN_ENV",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "HTTPConfig",
    "LimitsConfig",
    "MasterConfig",
    "PoolConfig",
    "PreemptionConfig",
    "RetentionConfig",
    "Role",
    "SchedulerConfig",
    "TalkbackConfig",
    "TokenConfig",
    "WebhooksConfig",
    "loadConfig",
    "parseConfig",
]
