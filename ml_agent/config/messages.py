"""Diagnostics: one config problem at a file position, and how pydantic errors become them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pydantic import ValidationError

    from ml_agent.config.loader import Source

KeyPath = tuple[str | int, ...]

FORMATS = ("text", "json", "github")


def dotted(path: KeyPath) -> str:
    """`('image', 'layers', 2, 'src')` -> `image.layers[2].src`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Diagnostic(NamedTuple):
    """One problem: where it is (line/col 1-based; 0 = the file as a whole) and what to do."""

    file: str
    line: int
    col: int
    path: KeyPath
    message: str

    @property
    def key(self) -> str:
        return dotted(self.path)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "key": self.key,
            "message": self.message,
        }


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`"; did you mean 'gpu'?"` for the closest choice, or "" when none is close."""
    import difflib  # only errors need it: keep start-up lean

    choices = [c for c in choices if isinstance(c, str)]
    lower = {c.lower(): c for c in choices}
    if word.lower() in lower:
        return f"; did you mean '{lower[word.lower()]}'?"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# ---- pydantic errors -> diagnostics ------------------------------------------------------

# Type errors whose message does not show the offending value: we add it.
_SHOW_INPUT = ("_type", "_parsing", "literal_error", "enum", "greater_than", "less_than")


def _model_types(annotation: Any) -> list[type]:
    """Every pydantic model class mentioned in an annotation (through unions, lists, dicts)."""
    from typing import get_args

    from pydantic import BaseModel

    found: list[type] = []
    todo = [annotation]
    while todo:
        ann = todo.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.append(ann)
        else:
            todo.extend(get_args(ann))
    return found


def _fields_at(root: type | None, loc: Sequence[Any]) -> list[str]:
    """The field names (and aliases) the model accepts at `loc` (pydantic's loc, tags kept)."""
    if root is None:
        return []
    candidates: list[type] = [root]
    for part in loc:
        if not isinstance(part, str):
            continue  # a list index: the item type is among the candidates already
        nxt: list[type] = []
        for model in candidates:
            for name, field in model.model_fields.items():  # type: ignore[attr-defined]
                if part in (name, field.alias):
                    nxt.extend(_model_types(field.annotation))
        if nxt:
            candidates = nxt
        else:
            named = [m for m in candidates if m.__name__ == part]
            if named:  # a union tag pydantic put in the loc
                candidates = named
            # else: a dict key (volume name...) or a validator tag: the type is unchanged
    names: list[str] = []
    for model in candidates:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            names.append(field.alias or name)
    return names


_TYPE_TAGS = {"str", "int", "float", "bool", "none", "bytes", "dict", "list", "tuple", "set"}


def _is_tag(part: Any) -> bool:
    """A loc element pydantic adds for a union member or validator, not a config key."""
    if not isinstance(part, str):
        return False
    return part[:1].isupper() or part in _TYPE_TAGS or any(c in part for c in "[]()-,")


def _data_path(data: Any, loc: Sequence[Any]) -> tuple[KeyPath, bool]:
    """Map pydantic's loc onto the data: (path, found). Union tags and validator names are
    dropped; once a key is missing from the data, the rest of the loc is kept as is."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_map = isinstance(node, Mapping) and isinstance(part, str) and part in node
        in_list = (
            isinstance(node, list)
            and isinstance(part, int)
            and not isinstance(part, bool)
            and 0 <= part < len(node)
        )
        if in_map or in_list:
            node = node[part]
            path.append(part)
        elif _is_tag(part):
            continue
        else:
            path += [p for p in loc[i:] if not _is_tag(p)]
            return tuple(path), False
    return tuple(path), True


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _message(err: Mapping[str, Any], fields: Sequence[str], key: str | int | None) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return f"unknown key '{key}'" + did_you_mean(str(key), fields)
    if kind == "missing":
        return "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    if msg[1:2].islower():  # pydantic's "Input should be..." reads better mid-line
        msg = msg[0].lower() + msg[1:]
    value = err.get("input")
    if any(t in kind for t in _SHOW_INPUT) and isinstance(value, str | int | float | bool):
        msg += f" (got {value!r})"
    elif any(t in kind for t in _SHOW_INPUT):
        msg += f" (got {_kind(value)})"
    return msg


def from_validation_error(
    exc: ValidationError, source: Source, model: type | None = None
) -> list[Diagnostic]:
    """One diagnostic per distinct problem, placed at the deepest node of the config the
    error's loc reaches (the key itself for unknown keys, the parent for missing ones)."""
    out: list[Diagnostic] = []
    seen: set[tuple[KeyPath, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        path, found = _data_path(source.data, loc)
        kind = err.get("type", "")
        if kind == "extra_forbidden" and found:
            fields = _fields_at(model, loc[:-1])
            where = source.key_loc(path)
            msg = _message(err, fields, path[-1] if path else None)
        elif not found:  # missing: point at the mapping that should hold it
            where = source.key_loc(path[:-1])
            msg = _message(err, (), None)
        else:
            where = source.value_loc(path)
            msg = _message(err, (), None)
        if any(path[:n] in source.poisoned for n in range(len(path) + 1)):
            continue  # the loader reported this value already; don't pile up follow-ups
        if (path, msg) in seen:
            continue
        seen.add((path, msg))
        out.append(Diagnostic(where.file, where.line, where.col, path, msg))
    return out


def in_file_order(diags: Iterable[Diagnostic], files: Sequence[str] = ()) -> list[Diagnostic]:
    """Sorted by file (in `files` order, the top config first), then line and column."""
    rank = {f: i for i, f in enumerate(files)}
    return sorted(diags, key=lambda d: (rank.get(d.file, len(rank)), d.file, d.line, d.col))


# ---- output formats ---------------------------------------------------------------------


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render(diags: Sequence[Diagnostic], fmt: str, checked: Sequence[str] = ()) -> str:
    """All diagnostics in one of FORMATS; text and github end with a newline when non-empty."""
    if fmt == "json":
        import json

        doc = {
            "valid": not diags,
            "checked": list(checked),
            "problems": [d.as_dict() for d in diags],
        }
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "github":
        lines = []
        for d in diags:
            props = f"file={_gh_escape(d.file, True)}"
            if d.line:
                props += f",line={d.line},col={d.col}"
            text = f"{d.key}: {d.message}" if d.path else d.message
            lines.append(f"::error {props},title=ml-agent validate::{_gh_escape(text)}")
        return "".join(line + "\n" for line in lines)
    return "".join(f"{d}\n" for d in diags)
