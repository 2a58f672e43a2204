#!/usr/bin/env python3
"""Set up metric logging for one piece of work: Space choice, trackio run, output folders.

    python /app/.claude/scripts/setup_trackio.py --project sst2-distilbert \\
        --run-name lr3e-5-bs32 [--space my-space] [--config '{"lr": 3e-5}']

When the launcher sets `ML_AGENT_TRACKIO_PROJECT` / `ML_AGENT_TRACKIO_RUN_NAME` (the runs
of a sweep: one project, one run name each), they are the defaults of `--project` /
`--run-name` and win over a flag that differs (said on stderr).

1. Writes `$TRACKIO_DIR/space_id` (one line, `namespace/space-name`): the Space the syncer
   publishes this volume's metrics to. The namespace is always `$ML_AGENT_HF_NAMESPACE` (the
   syncer ignores any other); without a namespace nothing is written and metrics stay local.
2. Starts (or resumes) the trackio run `--run-name` in project `--project`, locally in
   `$TRACKIO_DIR`, so that `TrainingArguments(project=..., run_name=..., report_to="trackio")`
   continues the same run. It never talks to the Hub: uploading is the syncer's job.
3. Creates the run's output folders under `$ML_AGENT_RUN_DIR` and prints `key=value` lines.

Exit status: 0 done, 2 bad arguments or environment (the message says what to fix).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SPACE = "ml-agent-metrics"
SPACE_ID_FILE = "space_id"  # read by the syncer: first line, `namespace/space-name`
OUTPUT_DIRS = ("checkpoints", "model", "eval", "logs")
# Hugging Face repo names: letters, digits, '-', '_', '.'; no '--' or '..'; <= 96 chars.
REPO_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
# Variables that would make trackio (or transformers' TrackioCallback) upload by itself.
REMOTE_ENV = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL")
# Set by the launcher (agent/protocol.py ENV): the names to log under, when it chose them.
PINNED = {"project": "ML_AGENT_TRACKIO_PROJECT", "run_name": "ML_AGENT_TRACKIO_RUN_NAME"}


class UsageError(Exception):
    pass


def space_id(namespace: str, space: str) -> str:
    """`namespace/space`, refusing a Space outside the namespace the syncer publishes to."""
    owner, _, name = space.rpartition("/")
    if owner and owner != namespace:
        raise UsageError(
            f"--space {space!r} is outside the namespace {namespace!r}: the syncer publishes "
            f"only to {namespace}/...; pass just the Space name, e.g. --space {name}"
        )
    if not REPO_NAME.match(name):
        raise UsageError(
            f"--space {name!r} is not a valid Space name (letters, digits, '-', '_', '.')"
        )
    return f"{namespace}/{name}"


def write_space_id(trackio_dir: Path, value: str) -> Path:
    path = trackio_dir / SPACE_ID_FILE
    tmp = path.with_name(f".{SPACE_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.replace(tmp, path)  # the syncer never reads half a line
    return path


def pinned(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """`--project` / `--run-name` from the launcher's variables when it set them (they win
    over a differing flag: the runs of a sweep must share its project); else the flags."""
    for dest, var in PINNED.items():
        flag = "--" + dest.replace("_", "-")
        given, chosen = getattr(args, dest), env.get(var, "").strip()
        if chosen:
            if given is not None and given != chosen:
                print(f"setup_trackio: {flag} {given!r} ignored: this run logs under "
                      f"{chosen!r} (${var}, set by the launcher)", file=sys.stderr)
            setattr(args, dest, chosen)
        elif not given:
            raise UsageError(f"{flag} is required (the launcher did not set ${var})")


def start_run(project: str, run_name: str, config: dict) -> None:
    """Create or resume the run locally; the empty step-0 log is what makes it exist."""
    import trackio

    # trackio prints progress to stdout; keep stdout for our key=value lines.
    with contextlib.redirect_stdout(sys.stderr):
        trackio.init(
            project=project,
            name=run_name,
            config=config,
            space_id=None,  # local only: the syncer publishes a consistent snapshot
            resume="allow",
            embed=False,
            auto_log_gpu=False,  # this process ends at once; training logs the GPU
            auto_log_cpu=False,
        )
        trackio.log({}, step=0)
        trackio.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="trackio project, e.g. sst2-distilbert "
                        "(default: $ML_AGENT_TRACKIO_PROJECT, which wins when set)")
    parser.add_argument("--run-name", help="what this run tries, e.g. lr3e-5 "
                        "(default: $ML_AGENT_TRACKIO_RUN_NAME, which wins when set)")
    parser.add_argument("--space", default=DEFAULT_SPACE, help="Space name inside the namespace")
    parser.add_argument("--config", default="{}", help="JSON object of hyperparameters")
    args = parser.parse_args(argv)
    env = os.environ
    try:
        pinned(args, env)
        for name in ("TRACKIO_DIR", "ML_AGENT_RUN_DIR"):
            if not env.get(name):
                raise UsageError(f"{name} is not set; the sandbox sets it (see CLAUDE.md)")
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--config is not JSON: {exc.msg}") from None
        if not isinstance(config, dict):
            raise UsageError("--config must be a JSON object")
        namespace = env.get("ML_AGENT_HF_NAMESPACE", "").strip()
        target = space_id(namespace, args.space) if namespace else None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", args.project):
            raise UsageError(f"--project {args.project!r}: use letters, digits, '-', '_', '.'")
    except UsageError as exc:
        print(f"setup_trackio: {exc}", file=sys.stderr)
        return 2

    for name in REMOTE_ENV:
        if env.pop(name, None) is not None:
            print(f"setup_trackio: ignoring {name}; unset it in your shell too: trackio must "
                  "log locally (the syncer publishes)", file=sys.stderr)
    trackio_dir = Path(env["TRACKIO_DIR"])
    trackio_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(env["ML_AGENT_RUN_DIR"])
    dirs = {key: run_dir / key for key in OUTPUT_DIRS}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    if target is not None:
        write_space_id(trackio_dir, target)
    run_id = env.get("ML_AGENT_RUN_ID", "")
    start_run(args.project, args.run_name, {"ml_agent_run_id": run_id, **config})

    lines = {
        "project": args.project,
        "run_name": args.run_name,
        "trackio_dir": str(trackio_dir),
        "space_id": target or "(none: no HF namespace configured, metrics stay local)",
        "run_dir": str(run_dir),
        **{key: str(path) for key, path in dirs.items()},
    }
    for key, value in lines.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
