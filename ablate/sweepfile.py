"""Reading a sweep file: YAML with line numbers, ``extends`` merged in, ``--set`` applied.

:func:`_load_tree` gives the raw mapping (the files it extends deep-merged under it) and the
(file, line) of every key path, so that :mod:`ablate.spec` can point errors at their line.
:func:`apply_overrides` then sets the command line's ``--set KEY=VALUE`` on that mapping; the
keys it sets point at their flag instead of a line, so a bad value is reported as
``--set train.epochs=x: ...``.
"""
from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import SpecError, closest, path_problem

KeyPath = tuple  # ("grid", "model.group_size", 0): str keys and int list indices
Loc = tuple  # (file, line)
NOT_INHERITED = ("name", "description", "extends")
DROPPABLE = ("grid", "paired", "arms", "expected")  # null entries remove inherited ones
MAX_NODES = 100_000  # alias bombs end here, not in memory
MAX_DEPTH = 32  # deeper nesting is a mistake, and would exhaust the recursion of the readers


# --- YAML with line numbers --------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """The safe loader, also reading ``1e-3`` as a float (YAML 1.1 alone wants ``1.0e-3``),
    and reading YAML 1.1's base-60 numbers (``1:30``, which it makes 90) and octal ones
    (``010``, which it makes 8) as strings, which the schema then refuses where it wants a
    number."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(  # YAML 1.1's int, without its sexagesimal and octal forms
    _INT, re.compile(r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_Loader.add_implicit_resolver(  # YAML 1.1's float, without its sexagesimal form
    _FLOAT, re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _read_yaml(path: Path) -> tuple[Any, dict[KeyPath, Loc]]:
    """Load one YAML document with the safe loader, recording the line of every key/item."""
    file = _display(path)
    try:
        if path.exists() and not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
            raise SpecError("is not a regular file (a named pipe or a device: reading it "
                            "might never end)", file=file, hint="give the sweep file itself")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"is not UTF-8 text ({e.reason} at byte {e.start})", file=file,
                        hint="save the sweep file as UTF-8") from None
    except OSError as e:
        raise SpecError(f"cannot read sweep file ({type(e).__name__}: {e})", file=file,
                        hint="check the path; sweeps live in sweeps/NAME.yaml") from None
    try:
        loader = _Loader(text)  # the reader rejects non-printable characters here
    except yaml.YAMLError as e:
        raise SpecError(f"not a YAML text: {e}", file=file) from None
    try:
        node = loader.get_single_node()
        locs: dict[KeyPath, Loc] = {(): (file, 1)}
        value = None if node is None else _build(loader, node, (), locs, file, [0, set()])
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        raise SpecError(f"YAML syntax error: {what}", file=file,
                        line=mark.line + 1 if mark else None,
                        hint="fix the YAML (indentation, quotes, ':' after keys)") from None
    except yaml.YAMLError as e:
        raise SpecError(f"YAML error: {e}", file=file) from None
    except RecursionError:  # the YAML composer recurses once per level of nesting
        raise SpecError(f"YAML nested more than {MAX_DEPTH} levels deep", file=file,
                        hint="a sweep file needs a few levels; look for runaway brackets"
                        ) from None
    finally:
        loader.dispose()
    return value, locs


def _display(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _build(loader: _Loader, node: yaml.Node, path: KeyPath, locs: dict, file: str,
           state: list) -> Any:
    state[0] += 1
    line = node.start_mark.line + 1
    if id(node) in state[1]:
        raise SpecError("YAML is recursive: an alias (*name) refers to a mapping or list that "
                        "contains it", file=file, line=line, key=_dotted(path) or None,
                        hint="write the values out, or point the alias elsewhere")
    if state[0] > MAX_NODES:
        raise SpecError(f"YAML holds more than {MAX_NODES:,} values (keys, items and scalars, "
                        "counting each use of an alias), the most a sweep file may hold",
                        file=file, line=line, key=_dotted(path[:2]) or None,
                        hint="split the sweep into several files, or use fewer values")
    if len(path) > MAX_DEPTH:
        raise SpecError(f"YAML nested more than {MAX_DEPTH} levels deep", file=file, line=line,
                        key=_dotted(path[:3]) + ".(...)",
                        hint="a sweep file needs a few levels; look for runaway brackets")
    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out: dict[str, Any] = {}
        state[1].add(id(node))
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            kline = knode.start_mark.line + 1
            if not isinstance(key, str):
                text = knode.value if isinstance(knode, yaml.ScalarNode) else "(complex key)"
                raise SpecError(f"key {text!r} is read as {_show(key).split()[0]}, not a string",
                                file=file, line=kline, key=_dotted(path) or None,
                                hint=f"quote it: '{text}'")
            if key in out:
                raise SpecError(f"duplicate key '{key}'", file=file, line=kline,
                                key=_dotted(path + (key,)),
                                hint=f"first given on line {locs[path + (key,)][1]}")
            locs[path + (key,)] = (file, kline)
            out[key] = _build(loader, vnode, path + (key,), locs, file, state)
        state[1].discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        state[1].add(id(node))
        items = []
        for i, item in enumerate(node.value):
            locs[path + (i,)] = (file, item.start_mark.line + 1)
            items.append(_build(loader, item, path + (i,), locs, file, state))
        state[1].discard(id(node))
        return items
    if not isinstance(node, yaml.ScalarNode):
        raise SpecError(f"YAML tag {node.tag} is not allowed", file=file, line=line,
                        key=_dotted(path) or None, hint="use plain mappings, lists and scalars")
    return loader.construct_object(node, deep=True)


# --- extends ----------------------------------------------------------------------------


def _load_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[KeyPath, Loc]]:
    """Load ``path`` and the files it extends, deep-merged in order (this file wins)."""
    raw, locs = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping of sweep keys (name, description, base, grid, ...)",
                        file=path, line=1, hint="see sweeps/README.md for the format")
    ext = raw.get("extends")
    if ext is None:
        return raw, locs
    paths = ext if isinstance(ext, list) else [ext]
    merged: dict = {}
    merged_locs: dict = {}
    for i, item in enumerate(paths):
        at = ("extends", i) if isinstance(ext, list) else ("extends",)
        base, base_locs = _load_tree(_parent(path, item, chain, locs.get(at, locs[("extends",)]),
                                             _dotted(at)), (*chain, path.resolve()))
        for key in NOT_INHERITED:
            base.pop(key, None)
        merged, merged_locs = _merge(merged, base), {**merged_locs, **base_locs}
    merged = _merge(merged, raw)
    for key in DROPPABLE:
        if isinstance(merged.get(key), dict):
            merged[key] = {k: v for k, v in merged[key].items() if v is not None}
    return merged, {**merged_locs, **locs}


def _parent(path: Path, ext: Any, chain: tuple[Path, ...], loc: Loc, key: str) -> Path:
    """The file that ``extends: ext`` in ``path`` names, checked to exist and not to cycle."""
    where = {"file": loc[0], "line": loc[1], "key": key}
    if not isinstance(ext, str) or not ext:
        raise SpecError(f"expected a file path (or a list of them), got {_show(ext)}", **where)
    if why := path_problem(ext):
        raise SpecError(f"the path {why}", **where, hint="name the file to extend by its "
                        "path relative to this one")
    try:
        parent = (path.parent / ext).resolve()
    except (RuntimeError, OSError):  # Python raises RuntimeError for a symbolic-link loop
        raise SpecError(f"extended file is a symbolic-link loop: {ext}", **where,
                        hint="point extends at a real file") from None
    here = path.resolve()
    if parent in chain or parent == here:
        cycle = " -> ".join(p.name for p in (*chain, here, parent))
        raise SpecError(f"extends cycle: {cycle}", **where, hint="remove one of the extends")
    if not parent.is_file():
        near = closest(Path(ext).stem, [p.stem for p in parent.parent.glob("*.yaml")])
        raise SpecError(f"extended file not found: {ext}", **where,
                        hint=f"did you mean '{near}.yaml'?" if near else "paths are relative "
                        "to the extending file")
    return parent


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


# --- key paths ---------------------------------------------------------------------------


def _dotted(path: KeyPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(path))


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)
    text = repr(value) if not isinstance(value, (dict, list, type(None))) else ""
    return f"{kind} {text}".strip()[:80]


def _where(locs: dict, path: Path, keys: KeyPath) -> dict[str, Any]:
    keys = tuple(keys)
    if keys not in locs:  # a node that a --set created (an arm of its own) is at that flag
        made = next((loc for k, loc in locs.items() if k[:len(keys)] == keys
                     and str(loc[0]).startswith("--set ")), None)
        if made is not None:
            return {"file": made[0], "line": made[1]}
    while keys and keys not in locs:
        keys = keys[:-1]
    file, line = locs.get(keys, (_display(path), None))
    return {"file": file, "line": line}


# --- overrides: --set KEY=VALUE on the merged tree ------------------------------------------

BASE_SECTIONS = ("model", "data", "train", "resources")  # "train.epochs" means base.train.epochs
AXIS_SECTIONS = ("model", "data", "train")  # "KEY=V1,V2" on these makes a grid axis
_NAMED = ("arms", "expected")  # their second part is a label: arms.LABEL.model.arch


def apply_overrides(tree: dict, locs: dict[KeyPath, Loc], overrides: tuple[str, ...], *,
                    single_trial: bool = False) -> tuple[dict, dict[KeyPath, Loc]]:
    """The sweep tree with every ``KEY=VALUE`` of ``overrides`` set on it, in order.

    VALUE is read as YAML with the sweep file's own reader. An axis (``model.*``, ``data.*``,
    ``train.*``) takes a comma-separated list: several values make it a grid axis, one value
    replaces the base's (or, when the axis is varied by grid or paired, its list of values).
    ``single_trial``: the tree stands for one trial's file (``ablate train CONFIG``), so only
    keys of its sections and one value each are taken. The keys set are located at their
    flag, so the schema's errors name it.
    """
    tree, locs = dict(tree), dict(locs)
    for text in overrides:
        flag = f"--set {text}"
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError("expected KEY=VALUE", file=flag,
                            hint="e.g. --set train.epochs=1 or --set model.group_size=1,4")
        path = _override_path(key, flag)
        if single_trial and path[0] != "base":
            raise SpecError(f"a trial config has no key '{key}'", file=flag,
                            hint="set keys of its model, data and train sections")
        axis = path[0] == "base" and len(path) == 3 and path[1] in AXIS_SECTIONS
        if axis:
            path, new = _axis_target(tree, path, _read_value(f"[{value}]", flag), flag,
                                     not single_trial)
        else:
            new = _read_value(value, flag)
        _set(tree, path, new, flag)
        locs = {k: v for k, v in locs.items() if k[:len(path)] != path}
        locs[path] = (flag, None)
    return tree, locs


def _override_path(key: str, flag: str) -> KeyPath:
    """``train.epochs`` -> (base, train, epochs); ``grid.model.group_size`` -> (grid,
    model.group_size); ``arms.se.model.se`` -> (arms, se, model.se); ``seeds`` -> (seeds,)."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise SpecError(f"'{key}' is not a dotted key", file=flag,
                        hint="e.g. train.epochs, base.data.root, seeds, grid.model.group_size")
    head, rest = parts[0], parts[1:]
    if head == "extends":
        raise SpecError("extends is read before any override", file=flag,
                        hint="edit the sweep file, or copy it and change its extends")
    if head in BASE_SECTIONS:
        return ("base", head, *rest)
    if head in ("grid", "paired") and rest:
        return (head, ".".join(rest))
    if head in _NAMED and len(rest) >= 2:
        return (head, rest[0], ".".join(rest[1:]))
    return tuple(parts)


def _axis_target(tree: dict, path: KeyPath, values: list, flag: str,
                 grid: bool) -> tuple[KeyPath, Any]:
    """Where the values of an axis go: the grid or paired list that varies it, a new grid axis
    for several values, else the base."""
    dotted = f"{path[1]}.{path[2]}"
    if not values:
        raise SpecError("no value given", file=flag, hint="write null to unset the key")
    if len(values) > 1 and not grid:
        raise SpecError("several values make a grid axis, and a single trial has none",
                        file=flag, hint="give one value; quote a value that holds a comma")
    for section in ("paired", "grid"):
        axes = tree.get(section)
        if grid and isinstance(axes, dict) and axes.get(dotted) is not None:
            return (section, dotted), values
    if len(values) > 1:
        return ("grid", dotted), values
    return path, values[0]


def _read_value(text: str, flag: str) -> Any:
    """A value read as the sweep file reads it (``1e-3`` a number, ``[0, 1]`` a list)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a safe loader
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"the value is not YAML ({problem})", file=flag,
                        hint="quote strings that hold YAML punctuation: --set 'KEY=\"a: b\"'"
                        ) from None


def _set(tree: dict, path: KeyPath, value: Any, flag: str) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise SpecError(f"'{_dotted(path[:i + 1])}' is {_show(child)} in the sweep, not a "
                            "mapping", file=flag, hint="set the whole value instead")
        else:
            child = node[part] = dict(child)  # never change the caller's tree
        node = child
    if value is None and path[0] in DROPPABLE and len(path) == 2:
        node.pop(path[-1], None)  # as in a file: null removes an axis, arm or expected entry
    else:
        node[path[-1]] = value
