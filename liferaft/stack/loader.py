"""Load and validate a stack file, reporting every problem at once with file, line, column, field and expectation."""

from __future__ import annotations

import difflib
import math
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from liferaft.errors import InvalidInput, Problem
from liferaft.stack.model import PATTERN_HELP, StackModel

MAX_FILE_BYTES = 1024 * 1024  # a stack file is a page or two; a megabyte is hostile or a mistake
MAX_NODES = 50_000  # YAML aliases can expand exponentially ("billion laughs"): cap the expanded size

Loc = tuple[str | int, ...]


class _TooBig(Exception):
    pass


def _read_yaml(path: Path, text: str) -> tuple[Any, dict[Loc, tuple[int, int]]]:
    """Parse YAML keeping (line, column) of every key and item, 1-based. Raises InvalidInput on syntax errors."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        msg = (e.problem or str(e)).strip()
        if "duplicate key" in str(e):
            msg = "duplicate key: " + (e.problem or "").strip()
        raise InvalidInput([Problem(str(path), line, col, "", f"YAML syntax: {msg}")]) from None
    except YAMLError as e:
        raise InvalidInput([Problem(str(path), None, None, "", f"YAML syntax: {e}")]) from None
    except RecursionError:
        raise InvalidInput([Problem(str(path), None, None, "", "the document is nested too deeply for a stack "
                                    "file")]) from None
    except (IndexError, ValueError, TypeError, AttributeError) as e:
        # ruamel's own constructors crash on some scalars it first resolved as numbers (`+_` -> IndexError): still
        # a document we cannot read, never an internal error.
        raise InvalidInput([Problem(str(path), None, None, "", f"YAML: a value could not be read "
                                    f"({type(e).__name__})")]) from None

    positions: dict[Loc, tuple[int, int]] = {}
    count = 0

    def plain(node: Any, loc: Loc) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise _TooBig
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                try:
                    line, col = cast(Any, node).lc.key(k)  # ruamel's CommentedMap
                    positions[(*loc, str(k))] = (line + 1, col + 1)
                except (AttributeError, KeyError, TypeError):
                    pass
                out[str(k)] = plain(v, (*loc, str(k)))
            return out
        if isinstance(node, list):
            out_l = []
            for i, v in enumerate(node):
                try:
                    line, col = cast(Any, node).lc.item(i)  # ruamel's CommentedSeq
                    positions[(*loc, i)] = (line + 1, col + 1)
                except (AttributeError, KeyError, TypeError, IndexError):
                    pass
                out_l.append(plain(v, (*loc, i)))
            return out_l
        if isinstance(node, str):
            return str(node)
        if isinstance(node, float) and not math.isfinite(node):
            nonfinite.append(loc)  # `.inf`, `.nan`: no field of a stack file takes one
            return node
        if node is None or isinstance(node, (bool, int, float)):
            return node
        return str(node)  # timestamps and other YAML types: let the model complain about the string

    nonfinite: list[Loc] = []
    try:
        data = plain(doc, ())
    except (_TooBig, RecursionError):
        raise InvalidInput([Problem(str(path), None, None, "", f"document expands to more than {MAX_NODES} nodes "
                                    "(an alias bomb, or far too large for a stack file)")]) from None
    if nonfinite:
        raise InvalidInput([Problem(str(path), *_position(positions, loc), ".".join(map(str, loc)),
                                    "expected a finite number (.inf and .nan are not accepted)") for loc in nonfinite])
    return data, positions


def _position(positions: dict[Loc, tuple[int, int]], loc: Loc) -> tuple[int | None, int | None]:
    for n in range(len(loc), -1, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return None, None


def _data_loc(data: Any, loc: tuple[Any, ...]) -> Loc:
    """Pydantic locs include union tags (e.g. the provider type); keep only the parts that exist in the data."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
    return tuple(out)


def _allowed_keys(data: Any, loc: Loc) -> list[str]:
    """The field names the model accepts at the mapping holding loc[-1]; used for 'did you mean'."""
    tp: Any = StackModel
    node = data
    for part in loc[:-1]:
        tp = _step_type(tp, node, part)
        node = node[part] if isinstance(node, (dict, list)) else None  # type: ignore[index]  # a list by int
        if tp is None:
            return []
    tp = _unwrap(tp, node)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _unwrap(tp: Any, node: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            chosen = None
            if isinstance(node, dict) and "type" in node:
                for opt in options:
                    f = getattr(opt, "model_fields", {}).get("type")
                    if f is not None and node["type"] in typing.get_args(f.annotation):
                        chosen = opt
            tp = chosen or options[0]
        else:
            return tp


def _step_type(tp: Any, node: Any, part: str | int) -> Any:
    tp = _unwrap(tp, node)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    return None


def _expected(err: Any) -> str:  # pydantic's ErrorDetails
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "this field is required"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return "expected " + PATTERN_HELP.get(pattern, f"a value matching {pattern}")
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}: expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a `{ctx.get('discriminator', 'type').strip(chr(39))}` field is required"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    # Pydantic's own message; it never contains the input value.
    return str(err["msg"])


def _validation_problems(path: Path, data: Any, positions: dict[Loc, tuple[int, int]],
                         exc: ValidationError) -> Iterator[Problem]:
    for err in exc.errors(include_input=False, include_url=False):
        loc = _data_loc(data, err["loc"])
        if err["type"] == "missing" and err["loc"]:
            loc = (*_data_loc(data, err["loc"][:-1]), err["loc"][-1])  # name the missing field itself
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
        line, col = _position(positions, loc)
        if line is None:
            line, col = 1, 1  # a missing top-level field: point at the start of the document
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            msg = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, _allowed_keys(data, loc), n=1, cutoff=0.6)
            msg += f" (did you mean {close[0]!r}?)" if close else ""
            allowed = _allowed_keys(data, loc)
            if allowed and not close:
                msg += f"; allowed here: {', '.join(allowed)}"
            yield Problem(str(path), line, col, dotted, msg)
        elif err["type"] == "missing":
            yield Problem(str(path), line, col, dotted, _expected(err))
        else:
            yield Problem(str(path), line, col, dotted, _expected(err))


def parse_stack(path: Path, text: str | None = None) -> tuple[StackModel, list[Problem], dict[Loc, tuple[int, int]]]:
    """Parse and validate. Returns the model, the warnings, and the key positions. Raises InvalidInput."""
    from liferaft.stack.checks import cross_checks  # avoid a cycle at import time

    if text is None:
        text = read_stack_text(path)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise InvalidInput([Problem(str(path), None, None, "", f"a stack file is at most {MAX_FILE_BYTES} bytes")])

    data, positions = _read_yaml(path, text)
    if not isinstance(data, dict):
        raise InvalidInput([Problem(str(path), 1, 1, "", "expected a mapping at the top (version: 1, name: ...)")])
    try:
        model = StackModel.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(list(_validation_problems(path, data, positions, exc))) from None
    problems = list(cross_checks(model, path, positions))
    if any(p.severity == "error" for p in problems):
        raise InvalidInput(problems)
    return model, problems, positions


def read_stack_text(path: Path) -> str:
    """The stack file's text: a regular file (symlinks followed) of at most MAX_FILE_BYTES, UTF-8. A device, FIFO,
    directory or symlink loop is refused naming the path, never read (st_size is 0 for /dev/zero: never trusted)."""
    from liferaft.stack._files import Refused, TooLarge, read_limited

    def refuse(why: str) -> InvalidInput:
        return InvalidInput([Problem(str(path), None, None, "", why)])

    try:
        data = read_limited(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        if path.is_symlink():
            raise refuse("a symlink that does not lead to a file") from None
        raise refuse("no such file (create one with `liferaft init`)") from None
    except TooLarge:
        raise refuse(f"the file is larger than {MAX_FILE_BYTES} bytes; a stack file is at most "
                     f"{MAX_FILE_BYTES}") from None
    except Refused as e:
        raise refuse(str(e)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("cannot read: not UTF-8 text (UnicodeDecodeError)") from None


def default_stack_path() -> Path:
    return Path(os.environ.get("LIFERAFT_STACK", "liferaft.yaml"))
