"""Global settings: defaults, an optional YAML file, environment overrides.

What belongs here: the settings the daemon reads (model), the small value parsers and the one
way an error echoes a value (fields), the top-level keys and sections (parse), the notify
section with its secrets (notify), the gpu.health, gpu.probation and gpu.predict sections (gpu_health,
gpu_probation, gpu_predict), the cluster section (cluster), and reading the file plus the GPU_WATCHDOG_*
overrides (load). `from watchdog.config import X` is the interface; the modules are how it is cut.

Pure but for one read: load_config reads the YAML file it is given. Nothing else here does
I/O, and importing the package pulls in no client, socket or database module
(tests/unit/test_purity.py checks), so the pure core can take a Config freely.

Loading is strict: an unknown key or a wrong type is a ConfigError, one line naming the key
path and the fix, because a silently ignored setting is worse than none.
"""

from __future__ import annotations

from watchdog.config.fields import parse_listen
from watchdog.config.load import apply_env, load_config
from watchdog.config.model import (
    ALL_DOWN_MODES,
    DEFAULT_RESET_COMMAND,
    ENV_CONFIG,
    ENV_DRY_RUN,
    ENV_LOG_FORMAT,
    ENV_LOG_LEVEL,
    ENV_STATE_DIR,
    MEMORY_LIMIT_MODES,
    BreakerConfig,
    Config,
    ConfigError,
    DrainConfig,
    GpuConfig,
    LitellmConfig,
    NotifyConfig,
    NotifyTarget,
    RamPreflightConfig,
    ServingConfig,
)
from watchdog.config.notify import apprise_installed
from watchdog.config.parse import parse_config

__all__ = [
    "ALL_DOWN_MODES",
    "DEFAULT_RESET_COMMAND",
    "ENV_CONFIG",
    "ENV_DRY_RUN",
    "ENV_LOG_FORMAT",
    "ENV_LOG_LEVEL",
    "ENV_STATE_DIR",
    "MEMORY_LIMIT_MODES",
    "BreakerConfig",
    "Config",
    "ConfigError",
    "DrainConfig",
    "GpuConfig",
    "LitellmConfig",
    "NotifyConfig",
    "NotifyTarget",
    "RamPreflightConfig",
    "ServingConfig",
    "apply_env",
    "apprise_installed",
    "load_config",
    "parse_config",
    "parse_listen",
]

# The modules here that do no I/O and read no clock (checked by tests/unit/test_purity.py);
# `load` reads the file, so it is not one of them.
PURE_MODULES: tuple[str, ...] = (
    "model",
    "fields",
    "parse",
    "notify",
    "gpu_health",
    "gpu_probation",
    "gpu_predict",
    "cluster",
)
