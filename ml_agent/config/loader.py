"""The config loader: files (safely), `extends:` chains, `--set` overrides, `${...}`.

Produces a Source: the merged plain data plus where every key and value was written (in
the file that defined it), and the problems found on the way, so that model validation
can report each error at its line and column.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_agent.config.interpolate import interpolate
from ml_agent.config.messages import Diagnostic, KeyPath, in_file_order
from ml_agent.config.safe_yaml import Doc, Loc, YamlProblem, copy_data, parse, walk
from ml_agent.config.tree import Tree, realpath

MAX_BYTES = 1 << 20  # a config is a few KiB; refuse anything that cannot be one
MAX_EXTENDS = 16
SET_FILE = "--set"


class Source:
    """A loaded config before model validation.

    `values`/`keys` map a key path to where its value/key is written; `files` lists the
    files read (the top config first, then its `extends` chain) and `folders` the real
    folder of each; `problems` holds what the loader found; `poisoned` the paths whose
    value is known bad (model errors there are follow-ups and get dropped).

    `tree`: the folders the config may name files in; `outside`: the files read from an
    allowed folder outside the project tree (their content is never quoted); `shown`:
    values inserted from `${env:...}` (or from those files) -> what to print instead;
    `tainted`: the paths holding such a value.
    """

    def __init__(
        self,
        path: Path,
        display: str,
        data: dict[str, Any],
        values: dict[KeyPath, Loc],
        keys: dict[KeyPath, Loc],
        files: list[str],
        problems: list[Diagnostic],
        poisoned: set[KeyPath],
        folders: dict[str, str] | None = None,
        tree: Tree | None = None,
        outside: set[str] | None = None,
        shown: dict[str, str] | None = None,
        tainted: set[KeyPath] | None = None,
    ) -> None:
        self.path = path  # the top config file, absolute
        self.display = display  # its name as the user wrote it
        self.data = data
        self.values = values
        self.keys = keys
        self.files = files
        self.problems = problems
        self.poisoned = poisoned
        self.folders = {display: str(path.parent)} if folders is None else folders
        self.tree = Tree(str(path.parent)) if tree is None else tree
        self.outside = outside or set()
        self.shown = shown or {}
        self.tainted = tainted or set()

    def value_loc(self, path: KeyPath) -> Loc:
        """Where the value at `path` is written, else its deepest known ancestor."""
        for n in range(len(path), 0, -1):
            loc = self.values.get(path[:n])
            if loc is not None:
                return loc
        return self.values.get((), Loc(self.display, 1, 1))

    def folder_of(self, path: KeyPath) -> str:
        """The folder of the file that wrote the value at `path`: what a relative local
        path there is relative to. `--set` values count as the top config's."""
        return self.folders.get(self.value_loc(path).file) or self.folders[self.display]

    def key_loc(self, path: KeyPath) -> Loc:
        """Where the key of `path` is written (falls back like value_loc)."""
        for n in range(len(path), 0, -1):
            loc = self.keys.get(path[:n]) or self.values.get(path[:n])
            if loc is not None:
                return loc
        return self.values.get((), Loc(self.display, 1, 1))  # where the top mapping starts


class LoadFailed(Exception):
    """The config could not be loaded at all; `diagnostics` says why (`outside`: the files
    read from outside the project tree, whose content a message must not quote)."""

    def __init__(self, diagnostics: list[Diagnostic], outside: set[str] | None = None) -> None:
        super().__init__("\n".join(map(str, diagnostics)))
        self.diagnostics = diagnostics
        self.outside = outside or set()


def _diag(loc: Loc | None, display: str, path: KeyPath, message: str) -> Diagnostic:
    if loc is None:
        return Diagnostic(display, 0, 0, path, message)
    return Diagnostic(loc.file, loc.line, loc.col, path, message)


# ---- reading one file --------------------------------------------------------------------

_cache: dict[tuple[str, int, int, str], Doc] = {}


def _fail(display: str, message: str) -> YamlProblem:
    return YamlProblem(Diagnostic(display, 0, 0, (), message))


def _stat(path: Path, display: str) -> os.stat_result:
    """stat() a config path, refusing everything that is not a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _fail(display, "no such file") from None
    except PermissionError:
        raise _fail(display, "cannot read: permission denied") from None
    except OSError as exc:
        raise _fail(display, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(
            display, "is a directory; name a .yaml file (`ml-agent validate` takes folders)"
        )
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise _fail(display, "not a regular file")
    if st.st_size > MAX_BYTES:
        limit = _size(MAX_BYTES)
        raise _fail(display, f"file is {_size(st.st_size)}; a config may be at most {limit}")
    return st


def read_text(path: Path, display: str) -> str:
    """The file's text; raises YamlProblem for every way a path can fail to be a config."""
    size = _stat(path, display).st_size
    try:
        with open(path, "rb") as fh:
            # read what stat() saw (asking for MAX_BYTES would allocate a 1 MiB buffer per
            # file), then whatever the file grew by since, up to the limit
            raw = fh.read(size + 1)
            if len(raw) > size:
                raw += fh.read(MAX_BYTES + 1 - len(raw))
    except PermissionError:
        raise _fail(display, "cannot read: permission denied") from None
    except OSError as exc:
        raise _fail(display, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:  # it grew since stat()
        raise _fail(display, f"file is larger than {_size(MAX_BYTES)}")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[raw.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace"))
        raise YamlProblem(
            Diagnostic(
                display,
                line,
                col + 1,
                (),
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            )
        ) from None


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def parse_file(path: Path, display: str, cached: bool = False) -> Doc:
    """Parse a file. `cached`: keep it by path, size and mtime (an `extends` base that many
    configs share is parsed once per process) and hand out copies."""
    if not cached:
        return parse(read_text(path, display), display)
    st = _stat(path, display)
    key = (str(path), st.st_size, st.st_mtime_ns, display)
    doc = _cache.get(key)
    if doc is None:
        doc = parse(read_text(path, display), display)
        if len(_cache) < 256:
            _cache[key] = doc
    return Doc(
        copy_data(doc.data), dict(doc.values), dict(doc.keys), list(doc.problems), set(doc.poisoned)
    )


_realpath = realpath  # moved to config.tree (the project tree needs it too)


# ---- extends -------------------------------------------------------------------------------


def _drop_under(doc: Doc, path: KeyPath) -> None:
    n = len(path)
    for p in [p for p in doc.values if p[:n] == path]:
        del doc.values[p]
    for p in [p for p in doc.keys if p[:n] == path]:
        del doc.keys[p]


def merge(base: Doc, over: Doc) -> Doc:
    """`over` on top of `base`: mappings merge key by key, anything else (lists) replaces.

    Locations follow the values: an inherited key keeps the position in the file that
    defined it.
    """
    replaced: set[KeyPath] = set()  # base collections the override replaces wholesale

    def rec(b: Any, o: Any, path: KeyPath) -> Any:
        if isinstance(b, dict) and isinstance(o, dict):
            res = dict(b)
            for k, v in o.items():
                res[k] = rec(b[k], v, path + (k,)) if k in b else v
            return res
        if isinstance(b, dict | list):
            replaced.add(path)
        return o

    data = rec(base.data, over.data, ())

    def stale(p: KeyPath) -> bool:  # below a replaced collection: its location is gone
        return bool(replaced) and any(p[:n] in replaced for n in range(1, len(p)))

    out = Doc(data, problems=base.problems + over.problems)
    out.values = {p: loc for p, loc in base.values.items() if not stale(p)}
    out.keys = {p: loc for p, loc in base.keys.items() if not stale(p)}
    out.values.update(over.values)
    out.keys.update(over.keys)
    out.poisoned = {p for p in base.poisoned if not stale(p) and p not in replaced}
    out.poisoned |= over.poisoned
    return out


def _load_chain(
    path: Path,
    display: str,
    real: str,
    chain: tuple[str, ...],
    files: list[str],
    folders: dict[str, str],
    tree: Tree,
    outside: set[str],
) -> Doc:
    """Load `path` (real path `real`, admitted by `tree`) and what it extends; `files`
    gets the display names, top file first, `folders` the real folder of each and
    `outside` those outside the project tree. `chain` holds the real paths of the files
    that extend this one (cycle detection)."""
    files.append(display)
    folders.setdefault(display, os.path.dirname(real))
    if not tree.inside(real):
        outside.add(display)
    doc = parse_file(path, display, cached=bool(chain))
    if not isinstance(doc.data, dict):
        # never the value itself: the file may be anything (a key file someone allowed)
        kind = {list: "a list", type(None): "null", str: "text"}.get(
            type(doc.data), type(doc.data).__name__
        )
        raise YamlProblem(
            Diagnostic(
                display,
                1,
                1,
                (),
                f"the top level must be a mapping of keys (app:, image:, ...), not {kind}",
            )
        )
    if "extends" not in doc.data:
        return doc
    target = doc.data.pop("extends")
    here = doc.values.pop(("extends",), Loc(display, 1, 1))
    doc.keys.pop(("extends",), None)
    if target is None:
        return doc
    if not isinstance(target, str) or not target.strip():
        raise YamlProblem(
            _diag(here, display, ("extends",), "must name a YAML file, e.g. 'extends: base.yaml'")
        )
    if "${" in target:
        raise YamlProblem(
            _diag(here, display, ("extends",), "is read before ${...} is resolved: name the file")
        )
    base_path = path.parent / target
    base_display = os.path.normpath(os.path.join(os.path.dirname(display), target))
    base_real = realpath(base_path)
    if not tree.admits(base_real):  # checked before the file is even looked at
        raise YamlProblem(_diag(here, display, ("extends",), tree.refusal(repr(target))))
    base_path = Path(base_real)  # read what was checked
    chain = chain or (real,)
    if base_real in chain:
        names = files[chain.index(base_real) :] + [base_display]
        raise YamlProblem(
            _diag(here, display, ("extends",), "extends cycle: " + " -> ".join(names))
        )
    if len(chain) >= MAX_EXTENDS:
        raise YamlProblem(_diag(here, display, ("extends",), f"more than {MAX_EXTENDS} extends"))
    try:
        base = _load_chain(
            base_path,
            base_display,
            base_real,
            chain + (base_real,),
            files,
            folders,
            tree,
            outside,
        )
    except YamlProblem as exc:
        d = exc.diagnostic
        if d.line == 0 and d.file == base_display:  # the file itself is missing/unreadable
            raise YamlProblem(
                _diag(here, display, ("extends",), f"cannot use '{target}': {d.message}")
            ) from None
        raise
    return merge(base, doc)


# ---- --set ---------------------------------------------------------------------------------


def apply_set(doc: Doc, override: str, index: int) -> None:
    """Apply `dotted.key=value` (value parsed as YAML) in place; problems go to doc.problems."""
    line = index + 1
    key, eq, text = override.partition("=")
    key = key.strip()
    if not eq or not key:
        doc.problems.append(
            Diagnostic(
                SET_FILE,
                line,
                1,
                (),
                f"expected KEY=VALUE, e.g. sandbox.gpu=A100 (got {override!r})",
            )
        )
        return
    parts = key.split(".")
    try:
        value_doc = parse(text if text.strip() else "null", SET_FILE, index, len(key) + 1)
    except YamlProblem as exc:
        doc.problems.append(exc.diagnostic)
        return
    node: Any = doc.data
    path: KeyPath = ()
    for i, raw in enumerate(parts):
        part: str | int = raw
        if isinstance(node, list):
            if not (raw.isascii() and raw.isdigit() and int(raw) < len(node)):
                doc.problems.append(
                    Diagnostic(
                        SET_FILE,
                        line,
                        1,
                        path,
                        f"'{raw}' is not an index of this list ({len(node)} items)",
                    )
                )
                return
            part = int(raw)
        elif not raw:
            doc.problems.append(Diagnostic(SET_FILE, line, 1, (), f"empty key in {key!r}"))
            return
        path += (part,)
        if i == len(parts) - 1:
            break
        child = node[part] if isinstance(part, int) else node.get(part)
        if not isinstance(child, dict | list):  # create (or replace a scalar by) a mapping
            child = node[part] = {}
            doc.values[path] = doc.keys[path] = Loc(SET_FILE, line, 1)
        node = child
    _drop_under(doc, path)
    node[path[-1]] = value_doc.data
    where = Loc(SET_FILE, line, 1)
    for p in walk(value_doc.data, ()):
        doc.values[path + p] = value_doc.values.get(p, where)
        doc.keys[path + p] = value_doc.keys.get(p, where)
    doc.keys[path] = where
    doc.problems += [
        Diagnostic(d.file, d.line, d.col, path + d.path, d.message) for d in value_doc.problems
    ]
    doc.poisoned -= {p for p in doc.poisoned if p[: len(path)] == path}
    doc.poisoned |= {path + p for p in value_doc.poisoned}


# ---- ${...} interpolation ------------------------------------------------------------------


# ---- the whole pipeline --------------------------------------------------------------------


def load_source(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    allow: Sequence[str] | None = None,
) -> Source:
    """Read `path` (with its extends chain), apply `overrides`, resolve `${...}`.

    `allow`: folders outside the project tree that `extends:` and `src:` may name
    (`--allow-outside`; ML_AGENT_ALLOW_OUTSIDE adds more).
    Raises LoadFailed when nothing can be validated (unreadable file, YAML syntax error,
    a top level that is not a mapping); other problems are in `Source.problems`.
    """
    display = os.fspath(path)
    file = Path(display)
    files: list[str] = []
    folders: dict[str, str] = {}
    outside: set[str] = set()
    tree = Tree.of(display, allow)
    real = realpath(file)
    if not tree.admits(real):  # a symlink (or in a symlinked folder) to a file elsewhere
        diag = Diagnostic(display, 0, 0, (), tree.refusal("this file, through a symlink,"))
        raise LoadFailed([diag])
    try:
        doc = _load_chain(file, display, real, (), files, folders, tree, outside)
    except YamlProblem as exc:
        raise LoadFailed([exc.diagnostic], outside) from None
    for i, override in enumerate(overrides):
        apply_set(doc, override, i)
    env = os.environ if env is None else env
    interpolated = interpolate(doc, env, display, outside)
    problems = doc.problems
    poisoned = doc.poisoned | interpolated.poisoned
    return Source(
        path=Path(real),
        display=display,
        data=doc.data,
        values=doc.values,
        keys=doc.keys,
        files=files + [SET_FILE],
        problems=in_file_order(problems, files + [SET_FILE]),
        poisoned=poisoned,
        folders=folders,
        tree=tree,
        outside=outside,
        shown=interpolated.shown,
        tainted=interpolated.tainted,
    )
