"""The Anthropic proxy: run tokens in, the real key out, usage metered (see app.py)."""

from ml_agent.proxy.app import AnthropicProxy, create_app
from ml_agent.proxy.serving import ServerThread, serve
from ml_agent.proxy.stores import MemoryTokenStore, MemoryUsageSink

__all__ = [
    "AnthropicProxy",
    "MemoryTokenStore",
    "MemoryUsageSink",
    "ServerThread",
    "create_app",
    "serve",
]
