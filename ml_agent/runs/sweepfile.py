"""The sweep file: a base config, tasks, and axes of config values; every run it implies.

    base: configs/local.yaml           # relative to this file
    tasks:
      - "fine-tune distilbert on sst2 for one epoch; report accuracy in eval/metrics.json"
    axes:                              # dotted config keys, as `--set` takes them
      agent.model: [claude-sonnet-4-5, claude-opus-4-1]
      sandbox.gpu: [A10, L40S]
    max_parallel: 2
    budget_usd: 40                     # optional: refuse a sweep whose runs may spend more
    share_gpus: false                  # optional: local GPU runs share GPUs (default: own)

The runs are the cross product of tasks and axis values (axes in file order). The file is
validated like a config (one strict model, every problem as `file:line:col: key: message`),
and so is every run's config: a value of an axis that the config refuses is reported at
that value in the sweep file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from ml_agent.config.models import Strict

MAX_RUNS = 1000


class SweepFile(Strict):
    """A sweep: strict like a config, so a typo'd key is an error and not a silent default."""

    base: Annotated[str, Field(description="The base config file, relative to the sweep file.")]
    tasks: Annotated[list[str], Field(min_length=1, description="The tasks; one run per task "
                                      "per combination of axis values.")]
    axes: Annotated[dict[str, Annotated[list[Any], Field(min_length=1)]], Field(
        description="Dotted config keys (as `--set` takes them) -> the values to try.",
    )] = {}
    max_parallel: Annotated[int, Field(ge=1, le=100, description="Runs live at once, at most.")] = 1
    budget_usd: Annotated[float | None, Field(gt=0, description=(
        "The most the sweep's runs may spend together: a sweep whose runs' budgets add up "
        "to more is refused."))] = None
    share_gpus: Annotated[bool, Field(description=(
        "Local GPU runs share the machine's GPUs with each other (and with other sharing "
        "runs) instead of each holding its own; `max_parallel` is then not bounded by the "
        "GPUs."))] = False


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its task and the `--set` overrides of its axis values."""

    index: int
    task: str
    overrides: tuple[str, ...]
    label: str  # the trackio run name: r<index>-<values>


@dataclass(frozen=True)
class Sweep:
    path: Path  # the sweep file, absolute
    base: Path  # the base config, absolute
    spec: SweepFile
    runs: tuple[SweepRun, ...]


def _override(key: str, value: Any) -> str:
    """`key=value` with the value as JSON (a YAML flow scalar: types survive the trip)."""
    return f"{key}={json.dumps(value)}"


def _label(index: int, values: tuple[Any, ...]) -> str:
    text = "-".join(str(v) for v in values)
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return f"r{index:02d}" + (f"-{text}"[:60] if text else "")


def expand(spec: SweepFile) -> list[tuple[SweepRun, tuple[int, ...]]]:
    """Every run, with the index of each axis value it takes (for error locations)."""
    keys = list(spec.axes)
    choices = [list(enumerate(spec.axes[k])) for k in keys]
    runs: list[tuple[SweepRun, tuple[int, ...]]] = []
    for task in spec.tasks:
        for combo in itertools.product(*choices):
            n = len(runs)
            overrides = tuple(_override(k, v) for k, (_, v) in zip(keys, combo, strict=True))
            run = SweepRun(n, task, overrides, _label(n, tuple(v for _, v in combo)))
            runs.append((run, tuple(i for i, _ in combo)))
    return runs


def load_sweep(path: str | os.PathLike[str], allow: Sequence[str] = ()) -> Sweep:
    """The validated sweep; raises ConfigError listing every problem, in the sweep file and
    in the configs its runs would launch. Like a config's `extends:`, `base:` names a file
    in the sweep file's project tree (or in `allow`, the `--allow-outside` folders)."""
    from ml_agent.config import check
    from ml_agent.config.loader import SET_FILE, Source, parse_file
    from ml_agent.config.messages import Diagnostic, from_validation_error, in_file_order
    from ml_agent.config.safe_yaml import YamlProblem
    from ml_agent.config.tree import Tree, realpath
    from ml_agent.errors import ConfigError

    display = os.fspath(path)
    file = Path(display).resolve()
    try:
        doc = parse_file(file, display)
    except YamlProblem as exc:
        raise ConfigError([exc.diagnostic]) from None
    if not isinstance(doc.data, dict):
        raise ConfigError([Diagnostic(display, 1, 1, (), "a sweep file is a mapping "
                                      "(base:, tasks:, axes:, max_parallel:, budget_usd:, "
                                      "share_gpus:)")])
    source = Source(file, display, doc.data, doc.values, doc.keys, [display],
                    list(doc.problems), set(doc.poisoned))
    diags = list(doc.problems)
    try:
        spec = SweepFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(in_file_order(diags + from_validation_error(exc, source, SweepFile),
                                        [display])) from None
    if diags:
        raise ConfigError(in_file_order(diags, [display]))
    base = (file.parent / spec.base).resolve()
    expanded = expand(spec)
    if len(expanded) > MAX_RUNS:
        loc = source.value_loc(("axes",))
        raise ConfigError([Diagnostic(display, loc.line, loc.col, ("axes",),
                                      f"{len(expanded)} runs; a sweep has at most {MAX_RUNS}")])
    loc = source.value_loc(("base",))
    tree = Tree.of(display, allow)
    if not tree.admits(realpath(base)):
        raise ConfigError([Diagnostic(display, loc.line, loc.col, ("base",),
                                      tree.refusal(f"base {spec.base!r}"))])
    if not base.is_file():
        raise ConfigError([Diagnostic(display, loc.line, loc.col, ("base",),
                                      f"no config file {spec.base!r} next to the sweep file")])
    keys = list(spec.axes)
    seen: set[tuple[str, int, int, str]] = set()
    problems: list[Diagnostic] = []
    for run, picks in expanded:
        _, found = check(base, run.overrides, allow=allow)
        for d in found:
            if d.file == SET_FILE and 0 < d.line <= len(keys):
                key = keys[d.line - 1]
                at = ("axes", key, picks[d.line - 1])
                loc = source.value_loc(at)
                d = Diagnostic(display, loc.line, loc.col, at, f"{d.key or key}: {d.message}")
            mark = (d.file, d.line, d.col, d.message)
            if mark not in seen:
                seen.add(mark)
                problems.append(d)
    if problems:
        raise ConfigError(in_file_order(problems, [display]))
    return Sweep(file, base, spec, tuple(run for run, _ in expanded))
