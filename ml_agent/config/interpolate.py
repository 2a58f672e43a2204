"""`${...}` interpolation: references into the merged config and environment variables.

    ${volumes.trackio.mount}   a value of the merged config (chained references resolve)
    ${image.layers.0.pip}      list items by index
    ${env:NAME}                an environment variable; unset is an error at the line
    ${env:NAME:-default}       ... with a default
    $${                        a literal `${`

A string that is exactly one `${...}` takes the referenced value itself (a number stays a
number, a mapping is copied); inside longer text the value is inserted as text.

Every value inserted from the environment is recorded with the text to show instead
(`${env:NAME}`), and so is every path that holds one, directly or through references:
what is printed shows where a value came from, never the value (`config.redact`). The
same holds for values referenced from files outside the project tree.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from ml_agent.config.messages import Diagnostic, KeyPath, did_you_mean, dotted
from ml_agent.config.safe_yaml import Doc, copy_data, walk

MAX_REF_DEPTH = 32  # ${a} -> ${b} -> ...: deeper chains are refused, not recursed into
MAX_STRING = 64 * 1024  # an interpolated string; `${b}${b}${b}` chains could grow forever
MAX_COPIED = 20_000  # values copied by whole-string references to mappings or lists


class Interpolated(NamedTuple):
    poisoned: set[KeyPath]  # left unresolved (their problem is reported)
    shown: dict[str, str]  # inserted value -> what to show instead, e.g. '${env:TOKEN}'
    tainted: set[KeyPath]  # the paths whose value holds such a value


def interpolate(
    doc: Doc, env: Mapping[str, str], display: str, outside: Collection[str] = ()
) -> Interpolated:
    """Resolve every `${...}` in `doc.data` in place; problems go to `doc.problems`.
    `outside`: the files (as displayed) outside the project tree, whose values are
    recorded like environment values when a reference copies them."""
    interp = _Interpolator(doc, env, display, outside)
    for path in _templates(doc.data):
        interp.resolve(path)
    return Interpolated(interp.poisoned, interp.shown, interp.tainted)


def _templates(value: Any) -> list[KeyPath]:
    """The paths of the strings in `value` that contain `${`, in document order."""
    out: list[KeyPath] = []
    stack: list[tuple[KeyPath, Any]] = [((), iter(_items(value)))]
    while stack:
        at, items = stack[-1]
        for k, v in items:
            if isinstance(v, str):
                if "${" in v:
                    out.append(at + (k,))
            elif isinstance(v, dict | list):
                stack.append((at + (k,), iter(_items(v))))
                break
        else:
            stack.pop()
    return out


def _items(node: dict | list) -> Any:
    return node.items() if isinstance(node, dict) else enumerate(node)


class _Interpolator:
    """Resolves `${a.b.c}` (references into the merged config, chained) and
    `${env:NAME}` / `${env:NAME:-default}`; `$${` is a literal `${`."""

    def __init__(
        self, doc: Doc, env: Mapping[str, str], display: str, outside: Collection[str] = ()
    ):
        self.doc = doc
        self.env = env
        self.display = display
        self.outside = outside
        self.shown: dict[str, str] = {}
        self.tainted: set[KeyPath] = set()
        self.done: set[KeyPath] = set()
        self.active: list[KeyPath] = []
        self.poisoned: set[KeyPath] = set()
        self.budget = MAX_COPIED

    def get(self, path: KeyPath) -> Any:
        node = self.doc.data
        for part in path:
            node = node[part]
        return node

    def set(self, path: KeyPath, value: Any) -> None:
        self.get(path[:-1])[path[-1]] = value

    def note(self, path: KeyPath, value: Any, expr: str) -> None:
        """`value` (inserted at `path` by `${expr}`) is shown as that reference, never as
        itself; so is each string in it."""
        self.tainted.add(path)
        for sub in walk(value, ()):
            leaf = value
            for part in sub:
                leaf = leaf[part]
            if isinstance(leaf, str) and leaf:
                self.shown.setdefault(leaf, "${" + ".".join([expr, *map(str, sub)]) + "}")

    def error(self, path: KeyPath, message: str) -> None:
        # a value copied by a reference has no position of its own: use its nearest parent's
        at = next((p for n in range(len(path), -1, -1) if (p := path[:n]) in self.doc.values), ())
        loc = self.doc.values.get(at)
        file, line, col = (self.display, 1, 1) if loc is None else loc
        self.doc.problems.append(Diagnostic(file, line, col, path, message))
        self.poisoned.add(path)

    def resolve(self, path: KeyPath) -> Any:
        """The value at `path` with its interpolations resolved (in place)."""
        value = self.get(path)
        if path in self.done or not isinstance(value, str) or "${" not in value:
            return value
        if path in self.active:
            cycle = self.active[self.active.index(path) :] + [path]
            self.error(path, "reference cycle: " + " -> ".join(dotted(p) for p in cycle))
            raise _Poison
        if len(self.active) >= MAX_REF_DEPTH:
            self.error(path, f"references chained more than {MAX_REF_DEPTH} deep")
            raise _Poison
        self.active.append(path)
        try:
            new = self.expand(value, path)
        except _Poison:
            self.poisoned.add(path)
            new = value
        finally:
            self.active.pop()
        self.set(path, new)
        self.done.add(path)
        return new

    def expand(self, text: str, path: KeyPath) -> Any:
        out: list[str] = []
        i = 0
        while True:
            j = text.find("${", i)
            if j < 0:
                out.append(text[i:])
                break
            if j > 0 and text[j - 1] == "$":  # `$${` escapes
                out.append(text[i : j - 1] + "${")
                i = j + 2
                continue
            end = text.find("}", j)
            if end < 0:
                self.error(path, f"unclosed '${{' in {text!r}; close it with '}}' or write '$${{'")
                raise _Poison
            expr = text[j + 2 : end].strip()
            value = self.lookup(expr, path)
            if j == 0 and end == len(text) - 1:  # the whole string: keep the value's type
                return value
            if isinstance(value, dict | list) or value is None:
                kind = "null" if value is None else type(value).__name__
                self.error(
                    path,
                    f"'${{{expr}}}' is {kind}; only text, numbers and booleans "
                    "can be inserted into a string",
                )
                raise _Poison
            out.append(text[i:j] + (str(value).lower() if isinstance(value, bool) else str(value)))
            i = end + 1
            if sum(map(len, out)) > MAX_STRING:
                self.error(path, f"interpolated text longer than {MAX_STRING // 1024} KiB")
                raise _Poison
        return "".join(out)

    def lookup(self, expr: str, path: KeyPath) -> Any:
        if expr.startswith("env:"):
            name, sep, default = expr[4:].partition(":-")
            if not name.isidentifier():
                self.error(path, f"'${{{expr}}}': '{name}' is not an environment variable name")
                raise _Poison
            value = self.env.get(name)
            if value is None:
                if sep:
                    return default
                self.error(
                    path,
                    f"environment variable {name} is not set; set it, or give a "
                    f"default: '${{env:{name}:-value}}'",
                )
                raise _Poison
            self.note(path, value, expr.partition(":-")[0])
            return value
        if not expr:
            self.error(path, "empty '${}'; write '${section.key}' or '${env:NAME}'")
            raise _Poison
        target: KeyPath = ()
        node: Any = self.doc.data
        for part in expr.split("."):
            if isinstance(node, dict) and part in node:
                target += (part,)
            elif (
                isinstance(node, list)
                and part.isascii()
                and part.isdigit()
                and int(part) < len(node)
            ):
                target += (int(part),)
            else:
                hint = did_you_mean(part, node) if isinstance(node, dict) else ""
                where = f"in '{dotted(target)}'" if target else "at the top level"
                self.error(path, f"'${{{expr}}}' refers to nothing: no '{part}' {where}{hint}")
                raise _Poison
            node = self.resolve(target) if isinstance(self.get(target), str) else self.get(target)
            if target in self.poisoned:  # reported where it is written
                raise _Poison
        if isinstance(node, dict | list):
            for sub in _templates(node):
                self.resolve(target + sub)
            node = copy_data(self.get(target))
            self.budget -= len(walk(node, ()))
            if self.budget < 0:
                self.error(path, f"references copy more than {MAX_COPIED} values")
                raise _Poison
        if self.tainted and any(
            t[: len(target)] == target or target[: len(t)] == t for t in self.tainted
        ):
            self.tainted.add(path)  # a value that holds (or is part of) one from env
        loc = self.doc.values.get(target)
        if self.outside and loc is not None and loc.file in self.outside:
            self.note(path, node, expr)
        return node


class _Poison(Exception):
    """Internal: this value cannot be resolved; its problem is reported already."""
