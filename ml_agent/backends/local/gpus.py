"""This machine's NVIDIA GPUs (read from the driver's files) and the leases runs hold on them.

Inventory: one folder per GPU the kernel module serves, `/proc/driver/nvidia/gpus/<bus>/`,
whose `information` file it writes as `Model: \\t\\t %s`, `GPU UUID: \\t %s`, `Bus Location:
\\t %04x:%02x:%02x.%x`, `Device Minor: \\t %u` (kernel-open/nvidia/nv-procfs.c), plus
`GPU Excluded:` (older drivers: `Blacklisted:`) for a GPU the driver refuses. A GPU's index
is its place in PCI bus order, as in `nvidia-smi` and CUDA with CUDA_DEVICE_ORDER=PCI_BUS_ID.
Everything is read under a root, `$ML_AGENT_GPU_ROOT` (default `/`): where the driver's
files are found, for containers that mount them elsewhere, and for tests.

Leases: a run holds each of its GPUs with flock(2) on `$ML_AGENT_HOME/local/gpus/<uuid>.lock`
(LOCK_EX: the run's alone; LOCK_SH: shared with other sharing runs, never with a run that
holds it alone). `take` locks without waiting; the launcher hands the open files to the
run's supervisor (`spawn_detached(keep_fds=...)`), which keeps them for its whole life, so
a run that ends, crashes or is killed frees its GPUs with nothing left to clean up. The
runs holding a GPU are named from the run registry (each run.json lists its GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_agent.errors import GpusBusy

ROOT_ENV = "ML_AGENT_GPU_ROOT"
GPUS_DIR = "proc/driver/nvidia/gpus"
#: The information file is a few hundred bytes; a cap keeps a strange root from costing.
INFO_CAP = 1 << 16
#: What `up`/the sweep driver tells a user who can share or stop.
SHARE_HINT = "`ml-agent up --share-gpus`, or `share_gpus: true` in a sweep file"


@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int  # PCI bus order among the usable GPUs (nvidia-smi's index)
    bus: str  # "0000:01:00.0"
    model: str  # "NVIDIA A10"
    uuid: str | None  # "GPU-1b724e78-...": what CUDA_VISIBLE_DEVICES names (order-proof)
    minor: int | None  # /dev/nvidia<minor>

    @property
    def key(self) -> str:
        """Names the GPU's lock file: its UUID, else its bus location (stable on a machine)."""
        return re.sub(r"[^A-Za-z0-9._:-]", "_", self.uuid or f"bus-{self.bus}")

    @property
    def cuda_id(self) -> str:
        """Its name in CUDA_VISIBLE_DEVICES: the UUID; the PCI-order index when the driver
        gave none (every device file is bound, so CUDA's PCI order is nvidia-smi's)."""
        return self.uuid or str(self.index)

    def describe(self) -> str:
        return f"GPU {self.index} ({self.model})"

    def to_json(self, shared: bool) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "uuid": self.uuid, "bus": self.bus,
                "minor": self.minor, "shared": shared}


def is_type(gpu: Gpu, modal_type: str) -> bool:
    """Whether the GPU's model is of a Modal GPU type (`A10` is an "NVIDIA A10G", not an
    "NVIDIA A100"; `A100-80GB` is any A100, `H100!` any H100): a loose check, for warnings."""
    token = modal_type.rstrip("!+").split("-")[0].upper()
    return re.search(rf"(?<![A-Z0-9]){re.escape(token)}(?![0-9])", gpu.model.upper()) is not None


def root(environ: Mapping[str, str] | None = None) -> Path:
    """Where the NVIDIA driver's files are found: `$ML_AGENT_GPU_ROOT`, default `/`."""
    env = os.environ if environ is None else environ
    return Path(env.get(ROOT_ENV) or "/")


def _fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def inventory(at: Path | None = None) -> list[Gpu]:
    """The usable GPUs under `at` (default `root()`), in PCI bus order; [] with no driver."""
    base = (root() if at is None else at) / GPUS_DIR
    found: list[Gpu] = []
    with contextlib.suppress(OSError):
        for folder in base.iterdir():
            try:
                with open(folder / "information", "rb") as fh:
                    info = _fields(fh.read(INFO_CAP).decode("utf-8", "replace"))
            except OSError:
                continue
            if "Yes" in (info.get("GPU Excluded"), info.get("Blacklisted")):
                continue  # the driver refuses it: CUDA does not see it either
            uuid = info.get("GPU UUID", "")
            minor = info.get("Device Minor", "")
            found.append(Gpu(
                index=-1,  # numbered below, in bus order
                bus=(info.get("Bus Location") or folder.name).lower(),
                model=info.get("Model") or "NVIDIA GPU",
                uuid=uuid if uuid.startswith("GPU-") else None,  # older drivers: "??"
                minor=int(minor) if minor.isdigit() else None,
            ))
    return [dataclasses.replace(gpu, index=i)
            for i, gpu in enumerate(sorted(found, key=lambda g: g.bus))]


def device_files(at: Path | None = None) -> tuple[str, ...]:
    """The NVIDIA device files present under `at`, as paths inside the sandbox (`/dev/...`):
    every /dev/nvidia* (the GPUs' nvidia<minor>, nvidiactl, nvidia-uvm, nvidia-uvm-tools,
    nvidia-modeset) and /dev/nvidia-caps/*."""
    dev = (root() if at is None else at) / "dev"
    files: list[str] = []
    with contextlib.suppress(OSError):
        files += sorted(f"/dev/{p.name}" for p in dev.glob("nvidia*") if not p.is_dir())
    with contextlib.suppress(OSError):
        files += sorted(f"/dev/nvidia-caps/{p.name}" for p in (dev / "nvidia-caps").iterdir())
    return tuple(files)


def cuda_env(leased: list[dict[str, Any]]) -> dict[str, str]:
    """The sandbox's CUDA variables for the GPUs a run leased (`Lease.to_json()`)."""
    if not leased:
        return {}
    ids = [g.get("uuid") or str(g["index"]) for g in leased]
    return {"CUDA_VISIBLE_DEVICES": ",".join(ids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def lock_dir(home: Path) -> Path:
    return home / "local" / "gpus"


@dataclasses.dataclass
class Lease:
    """GPUs locked by this process: `fds` are the open lock files (hand them to the run's
    long-lived process, then `release` this process's copies)."""

    gpus: tuple[Gpu, ...]
    shared: bool
    fds: tuple[int, ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [g.to_json(self.shared) for g in self.gpus]

    def describe(self) -> str:
        what = ", ".join(g.describe() for g in self.gpus)
        return f"{what}, shared with other sharing runs" if self.shared else what

    def release(self) -> None:
        """Close this process's lock files (a process that inherited them keeps the locks)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = ()


def take(count: int, *, home: Path, run_id: str, shared: bool = False,
         gpus: list[Gpu] | None = None) -> Lease:
    """Lock `count` free GPUs without waiting (shared: the least shared first), or raise
    GpusBusy naming the runs that hold the others and the way out."""
    gpus = inventory() if gpus is None else gpus
    folder = lock_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    held = holders(home) if shared else None  # read every run.json only when needed
    order = sorted(gpus, key=lambda g: (len(held.get(g.key, [])) if held else 0, g.index))
    taken: list[Gpu] = []
    fds: list[int] = []
    try:
        for gpu in order:
            if len(taken) == count:
                break
            fd = os.open(folder / f"{gpu.key}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # Who holds it alone, for messages (sharers are named from the registry); a
            # sharer clears the name of an exclusive holder that has ended.
            os.ftruncate(fd, 0)
            if not shared:
                os.pwrite(fd, f"{run_id}\n".encode(), 0)
            taken.append(gpu)
            fds.append(fd)
        if len(taken) < count:
            raise GpusBusy(busy_message(count, gpus, taken, shared, home, held))
    except BaseException:
        Lease(tuple(taken), shared, tuple(fds)).release()
        raise
    return Lease(tuple(taken), shared, tuple(fds))


def holders(home: Path) -> dict[str, list[str]]:
    """GPU key -> the live local runs that list it (run.json's `gpus`), oldest first."""
    from ml_agent.backends.local import registry

    live = []
    for paths in registry.all_runs(home):
        try:
            record = registry.read_record(paths)
        except Exception:  # noqa: BLE001 - a torn or foreign folder names no holder
            continue
        if not record.gpus or record.status not in ("starting", "running"):
            continue
        launching = record.status == "starting" and time.time() - record.created_at < 60
        if registry.supervisor_pid(paths) is None and not launching:
            continue  # its supervisor died: its locks went with it
        live.append(record)
    found: dict[str, list[str]] = {}
    for record in sorted(live, key=lambda r: r.created_at):
        for entry in record.gpus:
            gpu = Gpu(entry["index"], entry["bus"], entry["model"], entry.get("uuid"), None)
            found.setdefault(gpu.key, []).append(record.run_id)
    return found


def lock_owner(home: Path, gpu: Gpu) -> str | None:
    """The run id an exclusive holder wrote into the GPU's lock file, if any."""
    with contextlib.suppress(OSError):
        text = (lock_dir(home) / f"{gpu.key}.lock").read_text()[:100].strip()
        return text or None
    return None


def busy_message(count: int, gpus: list[Gpu], taken: list[Gpu], shared: bool, home: Path,
                 held: dict[str, list[str]] | None = None) -> str:
    held = holders(home) if held is None else held
    taken_keys = {g.key for g in taken}
    busy = []
    runs: list[str] = []
    for gpu in gpus:
        if gpu.key in taken_keys:
            continue
        names = held.get(gpu.key) or [r for r in [lock_owner(home, gpu)] if r]
        runs += [r for r in names if r not in runs]
        busy.append(f"{gpu.describe()} is held by " + (
            f"run {', '.join(names)}" if names else "another process"))
    want = f"{count} GPU{'s' if count > 1 else ''}" + (" shared" if shared else "")
    stop = f"`ml-agent stop {runs[0]}`" if runs else "`ml-agent stop RUN`"
    way_out = f"wait for a run to end, or stop one ({stop})"
    if not shared:
        way_out += f", or let runs share GPUs ({SHARE_HINT})"
    return (f"sandbox.gpu asks for {want}, but only {len(gpus) - len(busy)} of this "
            f"machine's {len(gpus)} GPUs {'are' if len(gpus) > 1 else 'is'} free"
            f"{' for sharing' if shared else ''}: {'; '.join(busy)}; {way_out}")
