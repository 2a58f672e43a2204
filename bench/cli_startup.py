"""How fast `ml-agent validate` starts and runs, measured side by side in one run.

    python bench/cli_startup.py [--runs 15]

1. Cold `ml-agent validate configs/a10.yaml` against `python -c "import yaml, pydantic"`
   (the floor any pydantic+YAML validator pays), runs interleaved so that load on the
   machine hits both alike. Goal: ratio <= 2.
2. One `ml-agent validate` call over 1,000 configs, minus the one-config time. Goal: < 1 s.

Wall-clock time and CPU time (user + system of the child) are both shown: on a machine
shared with other work, CPU time is the steadier of the two. ml-agent's bytecode is
compiled first, as an install does: both sides then start from .pyc files.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def cli() -> list[str]:
    """The console script run by this Python (not a shell shim), else the same via -c."""
    script = Path(sys.executable).parent / "ml-agent"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from ml_agent.cli import main; sys.exit(main())"]


def compile_bytecode() -> None:
    """Write ml-agent's .pyc files first, as `pip install` does for every package.

    The baseline's yaml and pydantic start from bytecode compiled at install; a source
    file edited since its .pyc was written (or PYTHONDONTWRITEBYTECODE, which keeps the
    stale .pyc stale) would make every timed run compile ml-agent's modules again.
    """
    import compileall

    compileall.compile_dir(REPO / "ml_agent", quiet=2)
    compileall.compile_file(REPO / "agent" / "protocol.py", quiet=2)  # loaded by contracts


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], expect: int = 0) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of `cmd`."""
    cpu, start = _cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    if proc.returncode != expect:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return wall, cpu


def side_by_side(commands: dict[str, list[str]], runs: int) -> dict[str, dict[str, list[float]]]:
    """{name: {"wall": [...], "cpu": [...]}}, the commands' runs interleaved."""
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in commands}
    for cmd in commands.values():  # warm the OS file cache once, untimed
        timed(cmd)
    for _ in range(runs):
        for name, cmd in commands.items():
            wall, cpu = timed(cmd)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def make_configs(folder: Path, n: int, standalone: bool) -> Path:
    """`n` configs like the shipped ones in a repo-shaped folder (src paths resolve)."""
    (folder / "configs").mkdir(parents=True)
    for name in ("agent", ".claude"):
        (folder / name).symlink_to(REPO / name)
    base = (CONFIGS / "base.yaml").read_text()
    shutil.copy(CONFIGS / "base.yaml", folder / "configs" / "base.yaml")
    gpus = ["T4", "L4", "A10", "A10:2", "L40S", "A100-80GB", "H100", "H100:8", "H200", "B200"]
    for i in range(n - 1):
        gpu = gpus[i % len(gpus)]
        if standalone:
            text = base.replace("gpu: null", f"gpu: {gpu}")
            text = text.replace("timeout: 1h", f"timeout: {i + 60}s")
        else:
            text = (
                f"extends: base.yaml\nsandbox:\n  gpu: {gpu}\n  timeout: {i + 60}s\n"
                f"  env:\n    RUN: run-{i}\n    DIR: ${{volumes.data.mount}}/runs/{i}\n"
            )
        (folder / "configs" / f"c{i:04d}.yaml").write_text(text)
    return folder / "configs"


def fmt(t: dict[str, list[float]]) -> str:
    med = statistics.median
    return (
        f"wall min {min(t['wall']) * 1000:5.0f} median {med(t['wall']) * 1000:5.0f} ms | "
        f"cpu min {min(t['cpu']) * 1000:5.0f} median {med(t['cpu']) * 1000:5.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    base_cmd = [sys.executable, "-c", "import yaml, pydantic"]
    one = [*cli(), "validate", "configs/a10.yaml"]
    compile_bytecode()
    print(f"python {sys.version.split()[0]}, {runs} interleaved runs each\n")

    times = side_by_side({"baseline": base_cmd, "validate": one}, runs)
    print(f"python -c 'import yaml, pydantic'   {fmt(times['baseline'])}")
    print(f"ml-agent validate configs/a10.yaml  {fmt(times['validate'])}")
    for kind in ("wall", "cpu"):
        v, b = times["validate"][kind], times["baseline"][kind]
        print(
            f"ratio validate / import ({kind:4})    min {min(v) / min(b):4.2f}x   "
            f"median {statistics.median(v) / statistics.median(b):4.2f}x   (goal <= 2x)"
        )
    print()

    with tempfile.TemporaryDirectory() as tmp:
        for standalone in (False, True):
            label = "standalone" if standalone else "extends base.yaml"
            folder = make_configs(Path(tmp) / label.split()[0], 1000, standalone)
            many = [*cli(), "validate", str(folder)]
            single = [*cli(), "validate", str(folder / "c0000.yaml")]
            t = side_by_side({"many": many, "single": single}, max(3, runs // 3))
            print(f"1,000 configs ({label}) in one call: {fmt(t['many'])}")
            for kind in ("wall", "cpu"):
                many, single = t["many"][kind], t["single"][kind]
                low = min(many) - min(single)  # the least disturbed runs: the steadier figure
                mid = statistics.median(many) - statistics.median(single)
                print(
                    f"  beyond start-up ({kind:4}): min {low * 1000:5.0f} ms   median "
                    f"{mid * 1000:5.0f} ms = {mid:.2f} ms per config   (goal < 1000 ms)"
                )


if __name__ == "__main__":
    main()
