"""The config language: YAML in (loader), LaunchConfig out (models), errors at lines (messages).

    load_config(path, overrides)  -> LaunchConfig, or ConfigError with every problem
    load(path, overrides)         -> Loaded(config, source): also where each value came from
    check(path, overrides)        -> (config or None, diagnostics): never raises for the config

Imports are deferred so that `import ml_agent.config` costs nothing until a config is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ml_agent.config.loader import Source
    from ml_agent.config.messages import Diagnostic
    from ml_agent.config.models import LaunchConfig

__all__ = ["Loaded", "check", "load", "load_config"]


class Loaded(NamedTuple):
    config: LaunchConfig
    source: Source  # source.path: the config file (absolute); source.files: the extends chain


def _check(
    path: str | os.PathLike[str],
    overrides: Sequence[str],
    env: Mapping[str, str] | None,
    allow: Sequence[str] | None = None,
) -> tuple[LaunchConfig | None, Source | None, list[Diagnostic]]:
    from pydantic import ValidationError

    from ml_agent.config.loader import SET_FILE, LoadFailed, load_source
    from ml_agent.config.messages import Diagnostic, KeyPath, from_validation_error, in_file_order
    from ml_agent.config.models import LaunchConfig
    from ml_agent.config.origins import anchor
    from ml_agent.config.tree import realpath
    from ml_agent.config.types import local_path

    try:
        source = load_source(path, overrides, env, allow)
    except LoadFailed as exc:
        if not exc.outside:
            return None, None, exc.diagnostics
        from ml_agent.config import redact

        return None, None, redact.diagnostics(exc.diagnostics, redact.Redactor(), (), exc.outside)
    diags = list(source.problems)

    def admit(at: KeyPath, text: str, folder: str) -> bool:
        """A `src:` of a config stays in the project tree: a host folder is never bound by
        accident. One given with --set is the command line's: whoever runs it chose it."""
        loc = source.value_loc(at)
        if loc.file == SET_FILE:
            return True
        real = realpath(local_path(folder, text))
        if not source.tree.admits(real):
            diags.append(Diagnostic(*loc, at, source.tree.refusal(repr(text))))
        elif links := source.tree.links_out(real) if os.path.isdir(real) else []:
            # nor a link inside a folder layer (Modal uploads what it points to)
            diags.append(Diagnostic(*loc, at, source.tree.link_refusal(repr(text), links)))
        else:
            return True
        source.poisoned.add(at)  # the model's view of the refused value is no news
        return False

    config = None
    try:
        # src: relative to the file that wrote it, and inside the project tree
        data = anchor(source.data, LaunchConfig, source.folder_of, admit)
        config = LaunchConfig.model_validate(data, context={"base_dir": source.path.parent})
    except ValidationError as exc:
        diags += from_validation_error(exc, source, LaunchConfig)
    if diags:
        config = None
        if source.shown or source.outside:  # never print a value from env or outside
            from ml_agent.config import redact

            shown = redact.Redactor(source.shown)
            diags = redact.diagnostics(diags, shown, source.tainted, source.outside)
    return config, source, in_file_order(diags, source.files)


def check(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    allow: Sequence[str] | None = None,
) -> tuple[LaunchConfig | None, list[Diagnostic]]:
    """Validate one config file: (the config, []) or (None, every problem in file order).

    `overrides` are `dotted.key=value` strings (`--set`); `env` replaces os.environ for
    `${env:NAME}` (tests); `allow`: folders outside the project tree that `extends:` and
    `src:` may name (`--allow-outside`). Messages never show a value from the environment.
    """
    config, _, diags = _check(path, overrides, env, allow)
    return config, diags


def load(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    allow: Sequence[str] | None = None,
) -> Loaded:
    """The validated config and its Source; raises ConfigError listing every problem."""
    from ml_agent.errors import ConfigError

    config, source, diags = _check(path, overrides, env, allow)
    if config is None or source is None:
        raise ConfigError(diags)
    return Loaded(config, source)


def load_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    allow: Sequence[str] | None = None,
) -> LaunchConfig:
    """The validated LaunchConfig; raises ConfigError listing every problem."""
    return load(path, overrides, env, allow).config


def config_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path of a config file, as build_plan records it."""
    return Path(path).resolve()
