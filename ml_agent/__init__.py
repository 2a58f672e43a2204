"""ml-agent: launch an autonomous ML engineer in a GPU sandbox, declared in YAML."""

__version__ = "0.1.0"

__all__ = ["__version__"]
