"""Safe YAML to plain data, remembering where every key and value is written.

We compose from libyaml's event stream ourselves (no recursion, so no stack to overflow)
instead of `yaml.safe_load`, because a config loader must also: reject duplicate keys,
refuse tags other than the plain ones, bound nesting depth and alias expansion (billion
laughs), and keep the line and column of every node for error messages.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import yaml
from yaml.nodes import ScalarNode

from ml_agent.config.messages import Diagnostic, KeyPath

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_DEPTH = 64  # real configs nest ~5 deep
MAX_VALUES = 20_000  # values, aliases expanded; a real config has a few hundred

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_COLLECTION_TAGS = {None, "!", _TAG + "map", _TAG + "seq"}
_TIMESTAMP, _VALUE = _TAG + "timestamp", _TAG + "value"


class Loc(NamedTuple):
    """A position in a file (line and col 1-based; line 0 = the file as a whole)."""

    file: str
    line: int
    col: int


class Doc:
    """Parsed YAML: the data, where each value/key is written, and non-fatal problems."""

    __slots__ = ("data", "values", "keys", "problems", "poisoned")

    def __init__(
        self,
        data: Any,
        values: dict[KeyPath, Loc] | None = None,
        keys: dict[KeyPath, Loc] | None = None,
        problems: list[Diagnostic] | None = None,
        poisoned: set[KeyPath] | None = None,
    ) -> None:
        self.data = data
        self.values = {} if values is None else values
        self.keys = {} if keys is None else keys
        self.problems = [] if problems is None else problems
        self.poisoned: set[KeyPath] = set() if poisoned is None else poisoned  # known bad


class YamlProblem(Exception):
    """A problem that stops parsing this file (syntax, limits); carries its diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


def _tag_refused(tag: str) -> str:
    return (
        f"tag '{_short_tag(tag)}' is not allowed; configs are plain YAML "
        "(strings, numbers, booleans, null, lists and mappings)"
    )


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


class _Frame:
    """A mapping or sequence being composed."""

    __slots__ = ("is_map", "value", "path", "key", "key_loc", "anchor", "start", "merges")

    def __init__(self, is_map: bool, path: KeyPath, anchor: str | None, start: int):
        self.is_map = is_map
        self.value: Any = {} if is_map else []
        self.path = path
        self.key: str | None = None  # a mapping's pending key (None: expecting a key)
        self.key_loc: Loc | None = None
        self.anchor = anchor
        self.start = start  # index into the composer's `order` where this node begins
        self.merges: list[tuple[Any, int, int]] = []  # (`<<` value, its slice of `order`)


_RESOLVED: dict[str, str] = {}  # plain scalar text -> the tag YAML gives it
_RESOLVED_MAX, _RESOLVED_LEN = 4096, 64  # bounded: hostile files must not fill memory

#: `Loc(...)` without the Python-level `__new__` of a NamedTuple (the composer makes two
#: per key: start-up and 1,000-file runs feel it).
_new = tuple.__new__


class _Composer:
    def __init__(
        self, text: str, file: str, line_offset: int = 0, col_offset: int = 0,
        loader: type = _Loader,
    ):
        self.file = file
        self.text = text
        self.dl, self.dc = line_offset, col_offset
        self.loader = loader(text)
        self.doc = Doc(None)
        # every value's path in document order: an anchor's subtree is a slice of it, which
        # lets an alias copy the subtree's locations
        self.order: list[KeyPath] = []
        self.anchors: dict[str, tuple[Any, int, int, KeyPath]] = {}
        self.budget = MAX_VALUES

    def loc(self, mark: Any) -> Loc:
        if self.dc:  # a one-line `--set` value: positions are on that command-line argument
            col = mark.column + 1 if mark.line == 0 else len(self.text) + 1
            return Loc(self.file, self.dl + 1, self.dc + col)
        return Loc(self.file, mark.line + 1 + self.dl, mark.column + 1)

    def fail(self, mark: Any, message: str, path: KeyPath = ()) -> YamlProblem:
        where = self.loc(mark) if mark is not None else Loc(self.file, 1, 1)
        return YamlProblem(Diagnostic(where.file, where.line, where.col, path, message))

    def problem(self, loc: Loc, path: KeyPath, message: str) -> None:
        self.doc.problems.append(Diagnostic(loc.file, loc.line, loc.col, path, message))

    # -- scalars ---------------------------------------------------------------------------
    def scalar(self, ev: Any, path: KeyPath) -> Any:
        tag = ev.tag
        if tag is None or tag == "!":
            if not ev.implicit[0]:  # quoted: a string, whatever it looks like
                return ev.value
            # a plain scalar's type depends on its text alone (PyYAML's resolver runs a
            # handful of regexes per value); configs repeat values (true, 1h, /data...)
            tag = _RESOLVED.get(ev.value)
            if tag is None:
                tag = self.loader.resolve(ScalarNode, ev.value, ev.implicit)
                if len(_RESOLVED) < _RESOLVED_MAX and len(ev.value) <= _RESOLVED_LEN:
                    _RESOLVED[ev.value] = tag
        if tag in (_STR, _TIMESTAMP, _VALUE):  # dates stay text: no field wants a date
            return ev.value
        if tag == _NULL:
            return None
        node = ScalarNode(tag, ev.value)
        try:
            if tag == _INT:
                return self.loader.construct_yaml_int(node)
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
            if tag == _BOOL:
                return self.loader.construct_yaml_bool(node)
        except (ValueError, KeyError):
            self.problem(self.loc(ev.start_mark), path, f"not a valid {_short_tag(tag)}")
            self.doc.poisoned.add(path)
            return ev.value
        self.doc.poisoned.add(path)
        self.problem(
            self.loc(ev.start_mark),
            path,
            _tag_refused(tag),
        )
        return ev.value

    # -- the event loop --------------------------------------------------------------------
    def compose(self) -> Doc:
        # The hot loop of every `validate`: names are bound locally on purpose.
        get = self.loader.get_event
        scalar_ev, alias_ev = yaml.ScalarEvent, yaml.AliasEvent
        map_start, map_end = yaml.MappingStartEvent, yaml.MappingEndEvent
        seq_start, seq_end, doc_end = (
            yaml.SequenceStartEvent,
            yaml.SequenceEndEvent,
            yaml.DocumentEndEvent,
        )
        values, keys, order = self.doc.values, self.doc.keys, self.order
        resolved = _RESOLVED
        file, dl, shifted = self.file, self.dl + 1, bool(self.dc)
        get()  # StreamStart
        ev = get()
        if isinstance(ev, yaml.StreamEndEvent):
            raise self.fail(None, "the file is empty; a config is a mapping such as 'app: my-app'")
        stack: list[_Frame] = []
        root_set = False
        top: _Frame | None = None
        while True:
            ev = get()
            cls = type(ev)
            if cls is doc_end:
                break
            # A mapping expecting a key: the fast path takes the common plain key.
            if top is not None and top.key is None and top.is_map:
                if cls is scalar_ev:
                    key = ev.value
                    if ev.tag is None and key != "<<" and key not in top.value and not shifted:
                        mark = ev.start_mark
                        top.key = key
                        top.key_loc = _new(Loc, (file, mark.line + dl, mark.column + 1))
                    else:
                        self.key(top, ev)
                    continue
                if cls is not map_end:
                    raise self.fail(
                        ev.start_mark,
                        "a key must be a plain value, not a list, mapping or alias",
                        top.path,
                    )
            if cls is map_end or cls is seq_end:
                frame = stack.pop()
                top = stack[-1] if stack else None
                if frame.merges:
                    self.apply_merges(frame)
                if frame.anchor:
                    self.done(frame.value, frame.anchor, frame.start, frame.path)
                value, start = frame.value, frame.start
            else:
                if top is None:
                    path: KeyPath = ()
                    if root_set:
                        raise self.fail(ev.start_mark, "internal: second root")
                    root_set = True
                elif top.is_map:
                    path = top.path + (top.key,)  # type: ignore[operator]
                else:
                    path = top.path + (len(top.value),)
                self.budget -= 1
                if self.budget < 0:
                    raise self.fail(ev.start_mark, f"more than {MAX_VALUES} values", path)
                start = len(order)
                order.append(path)
                mark = ev.start_mark
                values[path] = (
                    self.loc(mark)
                    if shifted
                    else _new(Loc, (file, mark.line + dl, mark.column + 1))
                )
                if top is not None and top.is_map:
                    keys[path] = top.key_loc  # type: ignore[assignment]
                if cls is scalar_ev:
                    value = ev.value
                    # quoted, or plain text known to stay text: a string as it is
                    if ev.tag is not None or (ev.implicit[0] and resolved.get(value) != _STR):
                        value = self.scalar(ev, path)
                    if ev.anchor:
                        self.done(value, ev.anchor, start, path)
                elif cls is alias_ev:
                    value = self.alias(ev, path)
                elif cls is map_start or cls is seq_start:
                    if len(stack) >= MAX_DEPTH:
                        raise self.fail(
                            ev.start_mark, f"nested more than {MAX_DEPTH} levels deep", path[:8]
                        )
                    if ev.tag not in _COLLECTION_TAGS:
                        self.doc.poisoned.add(path)
                        self.problem(
                            self.loc(ev.start_mark),
                            path,
                            _tag_refused(ev.tag),
                        )
                    top = _Frame(cls is map_start, path, ev.anchor, start)
                    stack.append(top)
                    continue
                else:  # pragma: no cover - libyaml emits nothing else inside a document
                    raise self.fail(ev.start_mark, f"unexpected YAML event {cls.__name__}")
            # attach the finished value to its parent
            if top is None:
                self.doc.data = value
            elif not top.is_map:
                top.value.append(value)
            elif top.key == "<<":
                self.merge_key(top, value, start)
                top.key = None
            else:
                top.value[top.key] = value
                top.key = None
        if stack:  # pragma: no cover - the parser balances start/end events
            raise self.fail(None, "unbalanced YAML document")
        ev = get()
        if isinstance(ev, yaml.DocumentStartEvent):
            raise self.fail(
                ev.start_mark, "more than one YAML document ('---'); a config is one document"
            )
        return self.doc

    def key(self, frame: _Frame, ev: Any) -> None:
        """A mapping key, the slow path: tags, `<<` merges, duplicates."""
        key = ev.value  # keys stay as written: `on:` or `1:` must not become True or 1
        mark = ev.start_mark
        loc = (
            self.loc(mark) if self.dc else Loc(self.file, mark.line + 1 + self.dl, mark.column + 1)
        )
        if ev.tag is not None and ev.tag not in ("!", _STR):
            self.problem(loc, frame.path, f"a key cannot carry the tag '{_short_tag(ev.tag)}'")
        if key == "<<" and ev.style is None:
            frame.key, frame.key_loc = "<<", loc
            return
        if key in frame.value:
            first = self.doc.keys.get(frame.path + (key,), loc)
            self.problem(
                loc,
                frame.path + (key,),
                f"duplicate key '{key}' (first defined at line {first.line}); "
                "YAML keeps only one: remove or merge them",
            )
        frame.key, frame.key_loc = key, loc

    def done(self, value: Any, anchor: str | None, start: int, path: KeyPath) -> None:
        if anchor:
            self.anchors[anchor] = (value, start, len(self.order), path)

    def alias(self, ev: Any, path: KeyPath) -> Any:
        entry = self.anchors.get(ev.anchor)
        if entry is None:
            raise self.fail(
                ev.start_mark,
                f"alias '*{ev.anchor}' refers to no anchor defined before it "
                "(or to the node that contains it)",
                path,
            )
        value, start, end, src = entry
        size = end - start
        self.budget -= size
        if self.budget < 0:
            raise self.fail(
                ev.start_mark,
                f"aliases expand to more than {MAX_VALUES} values; refusing (an alias bomb?)",
                path,
            )
        n = len(src)
        for sub in self.order[start + 1 : end]:  # the alias's own node is recorded already
            where = self.doc.values.get(sub)
            if where is None:  # a `<<` entry, dissolved into its mapping
                continue
            new = path + sub[n:]
            self.order.append(new)
            self.doc.values[new] = where
            if sub in self.doc.keys:
                self.doc.keys[new] = self.doc.keys[sub]
        return copy_data(value)

    def merge_key(self, frame: _Frame, value: Any, start: int) -> None:
        """YAML's `<<: *base` (or a list of them): keys not set explicitly come from there.
        `order[start:]` holds the paths of the merged value (`<frame>.<<` and below)."""
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            self.problem(
                frame.key_loc or Loc(self.file, 1, 1),
                frame.path,
                "'<<' merges a mapping (or a list of mappings) into this one",
            )
            return
        frame.merges.append((value, start, len(self.order)))

    def apply_merges(self, frame: _Frame) -> None:
        """Move the keys the `<<` values supply, and their locations, into the mapping."""
        merged: dict[str, Any] = {}
        values, keys = self.doc.values, self.doc.keys
        for value, start, end in frame.merges:
            src = self.order[start]  # `<frame>.<<`
            many = isinstance(value, list)
            winner: dict[Any, KeyPath] = {}  # merged key -> the `<<` item that supplies it
            for i, item in enumerate(value if many else [value]):
                for k, v in item.items():
                    if k not in merged and k not in frame.value:
                        merged[k] = v
                        winner[k] = src + (i,) if many else src
            n = len(src) + (1 if many else 0)  # where the key sits in a path below `<<`
            for sub in self.order[start:end]:  # bounded by the values the merge brought
                where, key_where = values.pop(sub, None), keys.pop(sub, None)
                if len(sub) > n and winner.get(sub[n]) == sub[:n]:
                    new = frame.path + sub[n:]
                    self.order.append(new)
                    if where is not None:
                        values[new] = where
                    if key_where is not None:
                        keys[new] = key_where
        frame.value.update(merged)


def copy_data(value: Any) -> Any:
    """A deep copy of plain YAML data (dicts, lists, scalars); faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_data(v) for v in value]
    return value


def walk(value: Any, path: KeyPath) -> list[KeyPath]:
    """Every key path in `value` (itself first), in document order."""
    out = [path]
    todo = [(value, path)]
    while todo:
        node, at = todo.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for k, v in items:
            out.append(at + (k,))
            if isinstance(v, dict | list):
                todo.append((v, at + (k,)))
    return out


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def parse(text: str, file: str, line_offset: int = 0, col_offset: int = 0) -> Doc:
    """Parse one YAML document; raises YamlProblem for problems that stop parsing.

    `line_offset`/`col_offset` shift positions (for `--set` values inside a command line).
    """
    composer = _Composer(text, file, line_offset, col_offset)
    try:
        return composer.compose()
    except yaml.MarkedYAMLError as exc:
        _our_limits_first(text, file, line_offset, col_offset)
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            ctx = exc.context_mark
            if ctx is not None and mark is not None and ctx.line != mark.line:
                start = composer.loc(ctx)
                problem = f"{problem} ({exc.context} that starts at {start.line}:{start.col})"
            else:
                problem = f"{problem} ({exc.context})"
        raise composer.fail(mark, f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise YamlProblem(
            Diagnostic(
                file,
                line + line_offset,
                col,
                (),
                f"character {char!r} is not allowed in YAML ({exc.reason})",
            )
        ) from None
    except yaml.YAMLError as exc:  # anything else libyaml refuses
        _our_limits_first(text, file, line_offset, col_offset)
        raise composer.fail(None, f"invalid YAML: {exc}") from None
    finally:
        composer.loader.dispose()


def _our_limits_first(text: str, file: str, line_offset: int, col_offset: int) -> None:
    """libyaml refused the text: if our own rules (nesting depth, value budget, ...) refuse
    it before that point, raise our problem instead.

    libyaml's scanner reads ahead and has limits of its own that vary by release (PyYAML
    6.0.3's libyaml stops at 1,000 flow levels, before our composer sees level 65), so what
    a user reads must not depend on the installed PyYAML. PyYAML's pure-Python parser has no
    such limit; it runs only on files libyaml already refused.
    """
    if _Loader is yaml.SafeLoader:
        return
    again = _Composer(text, file, line_offset, col_offset, loader=yaml.SafeLoader)
    try:
        again.compose()
    except YamlProblem:
        raise
    except yaml.YAMLError:
        return
    finally:
        again.loader.dispose()
