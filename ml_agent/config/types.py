"""Config value types that parse their own shorthand: GPU, duration, memory, paths, names.

Each type is an `Annotated` alias (or a small class) whose validator raises `ValueError`
with a message naming the bad value and the way out; the JSON Schema of each says what
the shorthand looks like. Standard library and pydantic only: `ml-agent validate` imports
this.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# -- helpers -------------------------------------------------------------------------------


def did_you_mean(value: str, choices: list[str] | tuple[str, ...], *, cutoff: float = 0.6) -> str:
    """`"; did you mean 'X'?"` for the closest choice (case-insensitive), or `""`."""
    import difflib  # only errors need it: keep start-up lean
    by_upper = {c.upper(): c for c in choices}
    close = difflib.get_close_matches(value.upper(), list(by_upper), n=1, cutoff=cutoff)
    return f"; did you mean {by_upper[close[0]]!r}?" if close else ""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _require_str(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string like {example} (got {_type_name(value)})")
    return value


def _any_case(text: str) -> str:
    """A JSON Schema (ECMA-262, no inline flags) regex matching `text` in any case."""
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if c in "+.*?()[]" else c)
        for c in text
    )


# -- GPU -----------------------------------------------------------------------------------

#: Modal's GPU types (canonical spelling) -> the most of them one sandbox may have.
#: The Modal client only upper-cases and splits ":N"; the server checks names, so this
#: allow-list is ours to keep in step with https://modal.com/docs/guide/gpu.
GPU_TYPES: dict[str, int] = {
    "T4": 8,
    "L4": 8,
    "A10": 4,
    "L40S": 8,
    "A100": 8,
    "A100-40GB": 8,
    "A100-80GB": 8,
    "RTX-PRO-6000": 8,
    "H100": 8,
    "H100!": 8,
    "H200": 8,
    "B200": 8,
    "B200+": 8,
}
GPU_ALIASES: dict[str, str] = {"A10G": "A10"}


class GpuSpec:
    """A GPU request: a Modal GPU type and a count, written `A10`, `h100:2`, `A10G`.

    `str(spec)` is the string `modal.Sandbox.create(gpu=...)` takes (`H100:2`).
    """

    __slots__ = ("count", "type")

    def __init__(self, type: str, count: int = 1) -> None:
        self.type = type
        self.count = count

    @classmethod
    def parse(cls, value: Any) -> GpuSpec:
        if isinstance(value, GpuSpec):
            return value
        text = _require_str(value, "gpu", "'A10' or 'H100:2' (or null for CPU)").strip()
        name, sep, count_text = text.partition(":")
        upper = name.strip().upper()
        canonical = GPU_ALIASES.get(upper, upper)
        if canonical not in GPU_TYPES:
            hint = did_you_mean(name, [*GPU_TYPES, *GPU_ALIASES], cutoff=0.5)
            if not hint:
                hint = f"; choose one of {', '.join(GPU_TYPES)}"
            raise ValueError(f"unknown GPU {name.strip()!r}{hint}")
        limit = GPU_TYPES[canonical]
        count = 1
        if sep:
            if not re.fullmatch(r"[0-9]+", count_text.strip()):  # not '²': isdigit() is
                raise ValueError(
                    f"GPU count must be a whole number (got {count_text!r}); "
                    f"write e.g. '{canonical}:2'"
                )
            count = int(count_text)
            if not 1 <= count <= limit:
                raise ValueError(
                    f"{canonical} allows 1 to {limit} GPUs per sandbox (got {count}); "
                    f"write e.g. '{canonical}:{min(2, limit)}'"
                )
        return cls(canonical, count)

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"

    def __repr__(self) -> str:
        return f"GpuSpec({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GpuSpec) and (self.type, self.count) == (other.type, other.count)

    def __hash__(self) -> int:
        return hash((self.type, self.count))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.to_string_ser_schema()
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        names = sorted([*GPU_TYPES, *GPU_ALIASES], key=len, reverse=True)
        return {
            "type": "string",
            "pattern": f"^({'|'.join(_any_case(n) for n in names)})(:[1-8])?$",
            "examples": ["A10", "L40S", "H100:2", "A100-80GB"],
        }


# -- durations and sizes -------------------------------------------------------------------

_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)


def parse_duration(value: Any) -> int:
    """Seconds from `90s`, `30m`, `1h`, `1h30m` or a whole number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be like '30m', '1h', '90s' or seconds (got a boolean)")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = _require_str(value, "a duration", "'30m', '1h', '90s' or a number of seconds")
    compact = text.strip().lower().replace(" ", "")
    match = _DURATION_RE.match(compact)
    if compact.isascii() and compact.isdigit():  # '²'.isdigit() is True, int('²') fails
        return int(compact)
    if not compact or not match or not any(match.groups()):
        raise ValueError(
            f"not a duration: {text!r}; write e.g. '90s', '30m', '1h', '1h30m' or seconds"
        )
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: int | float) -> str:
    """The shortest shorthand: 3600 -> '1h', 5400 -> '1h30m', 90 -> '1m30s'."""
    s = int(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return "".join(parts) or "0s"


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "description": "seconds"},
        {"type": "string", "pattern": r"^\s*(\d+h)?\s*(\d+m)?\s*(\d+s)?\s*$"},
    ],
    "examples": ["90s", "30m", "1h", "1h30m", 600],
}

#: Seconds; YAML accepts `90s`, `30m`, `1h`, `1h30m` or a plain number of seconds.
Duration = Annotated[int, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]

_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]i?b?)?$", re.IGNORECASE | re.ASCII)
_MIB = 1024 * 1024
_UNIT_BYTES = {
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def parse_memory(value: Any) -> int:
    """MiB (what Modal takes) from `16GiB`, `512MiB`, `16GB` (decimal) or a plain MiB number."""
    if isinstance(value, bool):
        raise ValueError("memory must be like '16GiB' or a number of MiB (got a boolean)")
    if isinstance(value, int):
        if value < 1:  # modal sends 0 as "no reservation" and a negative on to the server
            raise ValueError(f"memory must be at least 1 MiB (got {value}); e.g. '16GiB'")
        return value
    text = _require_str(value, "memory", "'16GiB', '512MiB' or a number of MiB")
    match = _MEMORY_RE.match(text.strip())
    if not match:
        raise ValueError(f"not a memory size: {text!r}; write e.g. '16GiB', '512MiB' or MiB")
    number, unit = float(match.group(1)), (match.group(2) or "mi").lower().rstrip("b")
    mib = number * _UNIT_BYTES[unit] / _MIB
    if mib <= 0:
        raise ValueError(f"memory must be more than 0 (got {text!r}); e.g. '16GiB'")
    return int(mib) if mib.is_integer() else int(mib) + 1  # round up to whole MiB


_MEMORY_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "description": "MiB"},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?[bB]?)?\s*$"},
    ],
    "examples": ["16GiB", "512MiB", "32GB", 4096],
}

#: MiB; YAML accepts `16GiB`, `512MiB`, `16GB` or a plain number of MiB.
MemorySize = Annotated[int, BeforeValidator(parse_memory), WithJsonSchema(_MEMORY_SCHEMA)]


def _pair(value: Any, what: str, example: str) -> tuple[Any, Any] | None:
    """`[request, limit]` as a tuple, or None when `value` is a single value."""
    if not isinstance(value, list | tuple):
        return None
    if len(value) != 2:
        raise ValueError(f"{what} takes one value or [request, limit], e.g. {example} "
                         f"(got {len(value)} values)")
    return value[0], value[1]


def parse_memory_spec(value: Any) -> int | tuple[int, int]:
    """MiB, or `[request, limit]` in MiB (modal/_resources.py: the limit is not below the
    request)."""
    pair = _pair(value, "memory", "['8GiB', '16GiB']")
    if pair is None:
        return parse_memory(value)
    request, limit = parse_memory(pair[0]), parse_memory(pair[1])
    if limit < request:
        raise ValueError(f"the memory limit ({limit} MiB) is below the request ({request} MiB)")
    return request, limit


def _cpu(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of cores, e.g. 2 or 0.5 (got "
                         f"{_type_name(value)})")
    if int(1000 * value) < 1:  # modal reserves whole milli-cores: int(1000 * cpu)
        raise ValueError(f"{what} must be at least 0.001 cores (got {value})")
    return float(value)


def parse_cpu_spec(value: Any) -> float | tuple[float, float]:
    """Cores, or `[request, limit]` (modal/_resources.py: both positive, limit >= request,
    compared in milli-cores)."""
    pair = _pair(value, "cpu", "[1, 4]")
    if pair is None:
        return _cpu(value, "cpu")
    request, limit = _cpu(pair[0], "the cpu request"), _cpu(pair[1], "the cpu limit")
    if int(1000 * limit) < int(1000 * request):
        raise ValueError(f"the cpu limit ({limit:g}) is below the request ({request:g})")
    return request, limit


_NUMBER_OR_PAIR = {"type": "number", "exclusiveMinimum": 0}
CpuSpec = Annotated[
    float | tuple[float, float],
    BeforeValidator(parse_cpu_spec),
    WithJsonSchema({
        "anyOf": [_NUMBER_OR_PAIR, {"type": "array", "items": _NUMBER_OR_PAIR,
                                    "minItems": 2, "maxItems": 2}],
        "examples": [2, 0.5, [1, 4]],
    }),
]
MemorySpec = Annotated[
    int | tuple[int, int],
    BeforeValidator(parse_memory_spec),
    WithJsonSchema({
        "anyOf": [*_MEMORY_SCHEMA["anyOf"], {"type": "array", "items": _MEMORY_SCHEMA,
                                             "minItems": 2, "maxItems": 2}],
        "examples": ["16GiB", ["8GiB", "16GiB"]],
    }),
]

#: Sandbox.create's `cloud` (modal_proto CloudProvider: AWS, GCP, OCI, AUTO; the server
#: reads the name).
Cloud = Literal["aws", "gcp", "oci", "auto"]


def parse_regions(value: Any) -> tuple[str, ...]:
    """Sandbox.create's `region`: one name or a list (modal/sandbox/_common.py
    `scheduler_placement`); the names themselves are the server's to check."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ValueError("region must be a region name or a list of them, e.g. 'us-east'")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a region must be a non-empty name (got {name!r})")
    return tuple(names)


Regions = Annotated[
    tuple[str, ...],
    BeforeValidator(parse_regions),
    WithJsonSchema({
        "anyOf": [{"type": "string", "minLength": 1},
                  {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}],
        "examples": ["us-east", ["us-east", "us-west"]],
    }),
]


# -- paths ---------------------------------------------------------------------------------


def parse_abs_path(value: Any) -> str:
    """A canonical absolute POSIX path other than `/`."""
    text = _require_str(value, "a path", "'/data'")
    if not text.startswith("/"):
        suggestion = posixpath.normpath("/" + text.lstrip("./")) if text.strip("./") else "/data"
        raise ValueError(f"must be an absolute path (got {text!r}); did you mean {suggestion!r}?")
    canonical = posixpath.normpath(text)
    if canonical.startswith("//"):
        canonical = "/" + canonical.lstrip("/")
    if canonical != text:
        raise ValueError(f"must be a canonical path (got {text!r}); did you mean {canonical!r}?")
    if text == "/":
        raise ValueError("cannot be '/' (the sandbox's root); choose a folder such as '/data'")
    return text


def parse_mount_path(value: Any) -> str:
    """A path Modal accepts as a volume mount: canonical, absolute, not `/`, `/root`, `/tmp`."""
    text = parse_abs_path(value)
    if text in ("/root", "/tmp"):
        raise ValueError(
            f"Modal cannot mount a volume at {text!r}; choose a folder inside it, "
            f"e.g. '{text}/data', or another folder such as '/data'"
        )
    return text


class LocalRef:
    """A local path as written in a YAML file, with the folder of that file.

    The loader wraps the values of LocalPath fields in it (`origins.anchor`), so that a
    `src:` in a file reached through `extends:` resolves against that file's folder.
    """

    __slots__ = ("base", "text")

    def __init__(self, text: str, base: str) -> None:
        self.text = text
        self.base = base

    def __repr__(self) -> str:  # error inputs show what the user wrote
        return repr(self.text)


def local_path(base: str, text: str) -> str:
    """The absolute path a `src:` written in a file in folder `base` names (the project
    tree check resolves this same path)."""
    return os.path.abspath(os.path.join(base, text))


class LocalPath:
    """`Annotated[str, LocalPath(want_dir=...)]`: a local file (or folder) that must exist.

    Relative paths resolve against the folder of the YAML file that wrote them (a
    LocalRef from the loader), else against the validation context's `base_dir`
    (default: the current directory). The validated value is the absolute path.
    """

    __slots__ = ("want_dir",)

    def __init__(self, *, want_dir: bool) -> None:
        self.want_dir = want_dir

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_before_validator_function(self.resolve, handler(source))

    def resolve(self, value: Any, info: core_schema.ValidationInfo) -> Any:
        if isinstance(value, LocalRef):
            text, base = value.text, value.base
        elif isinstance(value, str):
            text, base = value, (info.context or {}).get("base_dir") or "."
        else:
            return value  # not a string: the str schema says so
        # One stat, no symlink resolution: `ml-agent validate` checks 1,000 configs in a second.
        path = local_path(base, text)
        kind = "folder" if self.want_dir else "file"
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except (OSError, ValueError):
            raise ValueError(
                f"no such {kind}: {text!r} (resolved to {path!r}; src is relative to the "
                "folder of the YAML file that sets it)"
            ) from None
        if self.want_dir and not is_dir:
            raise ValueError(f"{text!r} is a file; use a `file:` layer for it")
        if not self.want_dir and is_dir:
            raise ValueError(f"{text!r} is a folder; use a `dir:` layer for it")
        return path


_PATH_SCHEMA = {"type": "string", "pattern": "^/"}

#: A canonical absolute path in the sandbox, other than `/`.
AbsPath = Annotated[str, BeforeValidator(parse_abs_path), WithJsonSchema(_PATH_SCHEMA)]
#: A volume mount path: an AbsPath that is also not `/root` or `/tmp` (Modal's rules).
MountPath = Annotated[
    str,
    BeforeValidator(parse_mount_path),
    WithJsonSchema({**_PATH_SCHEMA, "not": {"enum": ["/", "/root", "/tmp"]}}),
]


# -- names ---------------------------------------------------------------------------------

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_name(value: Any) -> str:
    text = _require_str(value, "an environment variable name", "'HF_HOME'")
    if not _ENV_NAME_RE.match(text):
        fixed = re.sub(r"[^A-Za-z0-9_]", "_", text)
        if fixed and fixed[0].isdigit():
            fixed = "_" + fixed
        raise ValueError(
            f"not a valid environment variable name: {text!r} (letters, digits and '_', "
            f"not starting with a digit); did you mean {fixed.upper()!r}?"
        )
    return text


def parse_env_value(value: Any) -> str:
    """Env values are strings; a YAML number or boolean gets 'quote it'."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        raise ValueError(
            f"environment values are strings, but YAML read {shown} as {_type_name(value)}; "
            f'quote it: "{shown}"'
        )
    raise ValueError(f"environment values are strings (got {_type_name(value)})")


EnvName = Annotated[
    str,
    BeforeValidator(parse_env_name),
    WithJsonSchema({"type": "string", "pattern": _ENV_NAME_RE.pattern}),
]
EnvValue = Annotated[str, BeforeValidator(parse_env_value), WithJsonSchema({"type": "string"})]

_MODAL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_APP_ID_RE = re.compile(r"^ap-[A-Za-z0-9]{22}$")


#: modal/_utils/name_utils.py `is_valid_object_name`: `len(name) <= 64`.
MODAL_NAME_MAX = 64
#: The modal.Dicts the Modal backend names after the app (backends/modal/stores.py).
APP_DICT_SUFFIXES = ("-tokens", "-usage", "-state", "-sync")
#: modal/_utils/name_utils.py `check_tag_dict`: tag keys and values, 1 to 63 characters.
MODAL_TAG_MAX = 63
_MODAL_TAG_RE = re.compile(r"^[A-Za-z0-9._-]{1,63}$")


def parse_modal_name(value: Any) -> str:
    """A Modal object name (app, volume, secret): letters, digits, `-`, `_`, `.`; <= 64 chars."""
    text = _require_str(value, "a Modal name", "'sandbox-data'")
    if not text:
        raise ValueError("a Modal name cannot be empty")
    if len(text) > MODAL_NAME_MAX:
        raise ValueError(
            f"Modal names are at most {MODAL_NAME_MAX} characters (got {len(text)})"
        )
    if not _MODAL_NAME_RE.match(text):
        fixed = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "name"
        raise ValueError(
            f"not a valid Modal name: {text!r} (letters, digits, '-', '_' and '.' only); "
            f"did you mean {fixed!r}?"
        )
    if _APP_ID_RE.match(text):
        raise ValueError(f"{text!r} looks like a Modal App ID; choose another name")
    return text


ModalName = Annotated[
    str,
    BeforeValidator(parse_modal_name),
    WithJsonSchema(
        {"type": "string", "pattern": _MODAL_NAME_RE.pattern, "maxLength": MODAL_NAME_MAX}
    ),
]

APP_NAME_MAX = MODAL_NAME_MAX - max(len(s) for s in APP_DICT_SUFFIXES)


def parse_app_name(value: Any) -> str:
    """A Modal app name short enough that every name derived from it is a Modal name too."""
    text = parse_modal_name(value)
    if len(text) > APP_NAME_MAX:
        longest = text + max(APP_DICT_SUFFIXES, key=len)
        raise ValueError(
            f"app names are at most {APP_NAME_MAX} characters (got {len(text)}): the Modal "
            f"backend names its stores after the app ('{longest}', ...) and Modal names are at "
            f"most {MODAL_NAME_MAX} characters; choose a shorter `app`"
        )
    return text


AppName = Annotated[
    str,
    BeforeValidator(parse_app_name),
    WithJsonSchema(
        {"type": "string", "pattern": _MODAL_NAME_RE.pattern, "maxLength": APP_NAME_MAX}
    ),
]


def modal_tag(text: str) -> str:
    """`text` as a valid Modal sandbox tag value: invalid characters -> '-', <= 63 chars."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:MODAL_TAG_MAX] or "-"
    assert _MODAL_TAG_RE.match(tag)
    return tag

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def parse_key(value: Any) -> str:
    """A logical key (volume keys): usable in `${volumes.<key>.mount}` references."""
    text = _require_str(value, "a key", "'data'")
    if not _KEY_RE.match(text):
        raise ValueError(
            f"not a valid key: {text!r} (letters, digits, '_' and '-', starting with a letter)"
        )
    return text


Key = Annotated[
    str, BeforeValidator(parse_key), WithJsonSchema({"type": "string", "pattern": _KEY_RE.pattern})
]

_DOMAIN_RE = re.compile(  # Modal's own rule for outbound domain names (`*.` allowed)
    r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\Z"
)


def parse_domain(value: Any) -> str:
    text = _require_str(value, "a domain", "'pypi.org'")
    if "://" in text or "/" in text:
        host = text.split("://", 1)[-1].split("/", 1)[0]
        raise ValueError(f"a domain, not a URL (got {text!r}); did you mean {host!r}?")
    if not _DOMAIN_RE.match(text):
        raise ValueError(f"not a domain name: {text!r}; write e.g. 'pypi.org' or '*.hf.co'")
    return text.lower()


Domain = Annotated[
    str, BeforeValidator(parse_domain), WithJsonSchema({"type": "string", "examples": ["pypi.org"]})
]


# -- Python version ------------------------------------------------------------------------

#: Python series `Image.debian_slim` takes, per Modal image builder version (modal/_image.py
#: SUPPORTED_PYTHON_SERIES without the free-threaded `t` builds, which debian_slim refuses).
#: A test keeps it equal to the installed modal's.
IMAGE_BUILDER_PYTHON: dict[str, tuple[str, ...]] = {
    "2023.12": ("3.10", "3.11", "3.12"),
    "2024.04": ("3.10", "3.11", "3.12"),
    "2024.10": ("3.10", "3.11", "3.12", "3.13"),
    "2025.06": ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15"),
    "2026.10": ("3.11", "3.12", "3.13", "3.14", "3.15"),
    "PREVIEW": ("3.11", "3.12", "3.13", "3.14", "3.15"),
}
#: modal's LATEST_IMAGE_BUILDER_VERSION: what a new Modal workspace builds with.
DEFAULT_IMAGE_BUILDER = "2026.10"
#: Every series some builder takes: the image builder version narrows it (models.py).
PYTHON_VERSIONS: tuple[str, ...] = tuple(
    sorted({v for vs in IMAGE_BUILDER_PYTHON.values() for v in vs}, key=lambda v: int(v[2:]))
)


def python_for_builder(python: str, builder: str) -> str | None:
    """Why Modal's image `builder` cannot build `python` (and what to do), or None."""
    offered = IMAGE_BUILDER_PYTHON[builder]
    if python in offered:
        return None
    others = [b for b, vs in IMAGE_BUILDER_PYTHON.items() if python in vs and b != "PREVIEW"]
    way_out = f', or set image.builder: "{max(others)}", which builds it' if others else ""
    return (
        f"the Modal image builder version {builder} does not build Python {python} (it "
        f"builds {', '.join(offered)}): choose one of those{way_out}"
    )


def parse_image_builder(value: Any) -> str:
    """A Modal image builder version, e.g. "2026.10" (a string: YAML reads 2024.10 as 2024.1)."""
    if isinstance(value, float):
        meant = next((b for b in IMAGE_BUILDER_PYTHON if b[0].isdigit() and float(b) == value),
                     repr(value))
        raise ValueError(f'YAML read {meant} as the number {value!r}; quote it: builder: "{meant}"')
    text = _require_str(value, "builder", '"2026.10"').strip()
    if text not in IMAGE_BUILDER_PYTHON:
        raise ValueError(
            f"Modal has no image builder version {text!r}; choose one of "
            f"{', '.join(IMAGE_BUILDER_PYTHON)} (as a quoted string)"
        )
    return text


ImageBuilder = Annotated[
    str,
    BeforeValidator(parse_image_builder),
    WithJsonSchema({"type": "string", "enum": list(IMAGE_BUILDER_PYTHON)}),
]


def parse_python_version(value: Any) -> str:
    if isinstance(value, float):
        shown = repr(value)
        meant = next((v for v in PYTHON_VERSIONS if float(v) == value and v != shown), shown)
        if meant != shown:
            raise ValueError(
                f'YAML read {meant} as the number {shown}; quote it: python: "{meant}"'
            )
        raise ValueError(f'YAML read {shown} as a number; quote it: python: "{shown}"')
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'python must be a string like "3.11" (got the number {value})')
    text = _require_str(value, "python", '"3.11"').strip()
    if text not in PYTHON_VERSIONS:
        raise ValueError(
            f"Modal images do not offer Python {text!r}; choose one of "
            f"{', '.join(PYTHON_VERSIONS)} (as a quoted string)"
        )
    return text


PythonVersion = Annotated[
    str,
    BeforeValidator(parse_python_version),
    WithJsonSchema({"type": "string", "enum": list(PYTHON_VERSIONS)}),
]
