"""Local paths resolve against the file that wrote them: LocalPath fields found by schema.

A config's `src:` may be inherited through `extends:` from a file in another folder; it is
relative to *that* file. The loader knows which file wrote every value (`Source`); the
models know which fields are local paths (`LocalPath` in their annotations). `anchor`
joins the two: it wraps each such value in a `LocalRef` carrying its file's folder, and
the field's validator resolves it. No field is named here: a new LocalPath field anywhere
in the models is handled the same way.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from ml_agent.config.messages import KeyPath
from ml_agent.config.types import LocalPath, LocalRef

#: In a trie: the node is a LocalPath value.
LEAF = "<local path>"
#: In a trie: every key of a mapping or index of a list.
ANY = object()

Trie = dict[Any, Any]

_tries: dict[type, Trie | None] = {}


def local_paths(model: type[BaseModel]) -> Trie | None:
    """The key paths of LocalPath fields in `model`, as a trie (None: there are none)."""
    if model not in _tries:
        _tries[model] = None  # a model that contains itself ends the recursion here
        trie: Trie = {}
        for name, field in model.model_fields.items():
            if any(isinstance(m, LocalPath) for m in field.metadata):
                trie[field.alias or name] = LEAF
            else:
                sub = _annotation(field.annotation)
                if sub is not None:
                    trie[field.alias or name] = sub
        _tries[model] = trie or None
    return _tries[model]


def _annotation(ann: Any) -> Trie | str | None:
    origin = get_origin(ann)
    if origin is Annotated:
        inner, *meta = get_args(ann)
        return LEAF if any(isinstance(m, LocalPath) for m in meta) else _annotation(inner)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return local_paths(ann)
    if origin is Union or origin is types.UnionType:
        return _union([_annotation(a) for a in get_args(ann)])
    if isinstance(origin, type) and issubclass(origin, Mapping):
        args = get_args(ann)
        sub = _annotation(args[1]) if len(args) == 2 else None
        return None if sub is None else {ANY: sub}
    if isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str:
        subs = [_annotation(a) for a in get_args(ann) if a is not Ellipsis]
        sub = _union(subs)
        return None if sub is None else {ANY: sub}
    return None


def _union(tries: list[Trie | str | None]) -> Trie | str | None:
    """One trie for the members of a union (a string in one member, a model in another)."""
    found = [t for t in tries if t is not None]
    if not found:
        return None
    if LEAF in found:
        return LEAF
    out: Trie = {}
    for trie in found:
        for key, sub in trie.items():  # type: ignore[union-attr]
            out[key] = _union([out.get(key), sub])
    return out


def anchor(
    data: Any,
    model: type[BaseModel],
    folder_of: Callable[[KeyPath], str],
    admit: Callable[[KeyPath, str, str], bool] | None = None,
) -> Any:
    """`data` with each string at a LocalPath field wrapped as LocalRef(text, folder_of(path)).

    `admit(path, text, folder)`: False refuses the value (it becomes None, so that no
    validator looks at the path; `admit` reports why). `data` itself is left alone:
    containers on the way to a changed value are copied.
    """
    trie = local_paths(model)
    return data if trie is None else _anchor(data, trie, (), folder_of, admit)


def _anchor(
    node: Any, trie: Trie | str, path: KeyPath, folder_of: Callable, admit: Callable | None
) -> Any:
    if trie is LEAF:
        if not isinstance(node, str):
            return node
        folder = folder_of(path)
        if admit is not None and not admit(path, node, folder):
            return None
        return LocalRef(node, folder)
    each = trie.get(ANY)  # type: ignore[union-attr]
    if isinstance(node, dict):
        # a model's trie names a few fields: look those up, don't scan the mapping
        items: Any = node.items() if each is not None else (
            (k, node[k]) for k in trie if k in node  # type: ignore[union-attr]
        )
    elif isinstance(node, list) and each is not None:
        items = enumerate(node)
    else:
        return node
    changed: dict[Any, Any] = {}
    for key, value in items:
        sub: Any = trie.get(key, each)  # type: ignore[union-attr]
        new = _anchor(value, sub, path + (key,), folder_of, admit)
        if new is not value:
            changed[key] = new
    if not changed:
        return node
    copy = dict(node) if isinstance(node, dict) else list(node)
    for key, value in changed.items():
        copy[key] = value
    return copy
