"""ml-agent: launch an autonomous ML engineer in a GPU sandbox, declared in YAML.

The public surface is small and lazy: `import ml_agent` loads no pydantic, so the CLI's
start-up pays only for what a command uses.

    config = ml_agent.load_config("configs/a10.yaml", overrides=["sandbox.gpu=H100"])
    plan = ml_agent.build_plan(config, "configs/a10.yaml")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "load_config": "ml_agent.config",
    "LaunchConfig": "ml_agent.config.models",
    "build_plan": "ml_agent.plan",
    "launch_env": "ml_agent.plan",
    "Plan": "ml_agent.plan",
    "get_backend": "ml_agent.backends",
    "MlAgentError": "ml_agent.errors",
    "ConfigError": "ml_agent.errors",
}

__all__ = [
    "ConfigError",
    "LaunchConfig",
    "MlAgentError",
    "Plan",
    "__version__",
    "build_plan",
    "get_backend",
    "launch_env",
    "load_config",
]

if TYPE_CHECKING:
    from ml_agent.backends import get_backend
    from ml_agent.config import load_config
    from ml_agent.config.models import LaunchConfig
    from ml_agent.errors import ConfigError, MlAgentError
    from ml_agent.plan import Plan, build_plan, launch_env


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ml_agent' has no attribute {name!r}")
