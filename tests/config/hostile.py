"""Hostile configs (a pull request CI validates) beside decoy secrets, for the trust tests.

    world = Hostile.build(tmp_path)    # tmp/secrets/ (outside), tmp/proj/ (a git checkout)

Each case is a config that tries to read, print or bind something outside its project, or
to print an environment value; `DECOYS` must never appear in any output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DECOY_KEY = "sk-ant-DECOY-key-7f3a9c"  # in secrets/anthropic-secret.env
DECOY_JSON = "DECOY-json-token-51c2"  # in secrets/creds.json
DECOY_ENV = "DECOY-env-value-93be"  # in $ML_AGENT_TEST_DECOY
DECOY_BASE = "decoy-base-app-0d41"  # in a base config outside a tree without .git
ENV_NAME = "ML_AGENT_TEST_DECOY"
DECOYS = (DECOY_KEY, DECOY_JSON, DECOY_ENV, DECOY_BASE, "root:x:0:0")

GOOD = """\
app: ok
backend: local
image: {python: '3.11'}
volumes: {data: {name: d, mount: /data}}
proxy: {enabled: false}
"""


@dataclass(frozen=True)
class Case:
    name: str
    config: str  # relative to the project
    where: str  # file:line:col of the problem ("file" alone: the file as a whole)
    rule: str  # words of the message that state the rule
    flag: str = "--allow-outside"  # the way out the message names ("" when none)


TREE = "outside the project tree"
CASES = [
    Case("absolute", "configs/absolute.yaml", "configs/absolute.yaml:1:10", TREE),
    Case("etc_passwd", "configs/etc_passwd.yaml", "configs/etc_passwd.yaml:1:10", TREE),
    Case("dotdot", "configs/dotdot.yaml", "configs/dotdot.yaml:1:10", TREE),
    Case("creds_value", "configs/creds_value.yaml", "configs/creds_value.yaml:1:10", TREE),
    Case("symlink_file", "configs/symlink_file.yaml", "configs/symlink_file.yaml:1:10", TREE),
    Case("symlink_dotdot", "configs/symlink_dotdot.yaml", "configs/symlink_dotdot.yaml:1:10", TREE),
    Case("top_symlink", "configs/top_symlink.yaml", "configs/top_symlink.yaml", TREE),
    Case("src_dir", "configs/src_dir.yaml", "configs/src_dir.yaml:2:30", TREE),
    Case("src_root", "configs/src_root.yaml", "configs/src_root.yaml:2:30", TREE),
    Case("src_symlink", "configs/src_symlink.yaml", "configs/src_symlink.yaml:2:31", TREE),
    Case("no_git", "../notree/a/top.yaml", "../notree/a/top.yaml:1:10", TREE),
    Case("env_gpu", "configs/env_gpu.yaml", "configs/env_gpu.yaml:2:16", "unknown GPU", ""),
    Case(
        "env_via_ref", "configs/env_via_ref.yaml", "configs/env_via_ref.yaml:3:8", "unknown GPU", ""
    ),
]


@dataclass(frozen=True)
class Hostile:
    root: Path  # tmp_path
    project: Path  # root/proj, holding .git
    secrets: Path  # root/secrets, outside it

    @classmethod
    def build(cls, root: Path) -> Hostile:
        secrets, project = root / "secrets", root / "proj"
        configs = project / "configs"
        for folder in (secrets, project / ".git", configs, root / "notree" / "a"):
            folder.mkdir(parents=True, exist_ok=True)
        (root / "notree" / "b").mkdir(exist_ok=True)
        (secrets / "anthropic-secret.env").write_text(f"ANTHROPIC_API_KEY={DECOY_KEY}\n")
        (secrets / "creds.json").write_text(f'{{"token": "{DECOY_JSON}"}}\n')
        (secrets / "agent.py").write_text(f"KEY = {DECOY_KEY!r}\n")
        # reached by a glob through configs/shared: its error would quote the value
        (secrets / "leak.yaml").write_text(f"app: 'bad name {DECOY_KEY}'\n")
        (configs / "good.yaml").write_text(GOOD)
        (configs / "link.json").symlink_to("../../secrets/creds.json")
        (configs / "shared").symlink_to("../../secrets", target_is_directory=True)
        (configs / "agent.py").symlink_to("../../secrets/agent.py")
        (configs / "top_symlink.yaml").symlink_to("../../secrets/anthropic-secret.env")
        files = {
            "absolute": f"extends: {secrets}/anthropic-secret.env\n",
            "etc_passwd": "extends: /etc/passwd\n",
            "dotdot": "extends: ../../secrets/anthropic-secret.env\n",
            "creds_value": "extends: ../../secrets/creds.json\nsandbox: {gpu: '${token}'}\n",
            "symlink_file": "extends: link.json\n",
            # `shared/..` is the parent of the link's target (as the OS opens it), not configs/
            "symlink_dotdot": "extends: shared/../secrets/creds.json\n",
            "src_dir": "extends: good.yaml\nimage: {layers: [{dir: {src: ../../secrets, "
            "dest: /s}}]}\n",
            "src_root": "extends: good.yaml\nimage: {layers: [{dir: {src: /root, dest: /s}}]}\n",
            "src_symlink": "extends: good.yaml\nimage: {layers: [{file: {src: agent.py, "
            "dest: /agent/agent.py}}]}\n",
            "env_gpu": f"extends: good.yaml\nsandbox: {{gpu: '${{env:{ENV_NAME}}}'}}\n",
            "env_via_ref": f"extends: good.yaml\nsandbox:\n  gpu: ${{sandbox.env.FOO}}\n"
            f"  env: {{FOO: 'x-${{env:{ENV_NAME}}}'}}\n",
        }
        for name, text in files.items():
            (configs / f"{name}.yaml").write_text(text)
        (root / "notree" / "b" / "base.yaml").write_text(GOOD.replace("ok", DECOY_BASE))
        (root / "notree" / "a" / "top.yaml").write_text("extends: ../b/base.yaml\n")
        return cls(root, project, secrets)


def clean_env() -> dict[str, str]:
    """The environment the tests run with: the decoy set, no allowed folders."""
    env = {k: v for k, v in os.environ.items() if k != "ML_AGENT_ALLOW_OUTSIDE"}
    env[ENV_NAME] = DECOY_ENV
    return env


def leaked(text: str) -> list[str]:
    """The decoys that appear in `text` (case-insensitively: GPU names are upper-cased)."""
    return [d for d in DECOYS if d.casefold() in text.casefold()]
