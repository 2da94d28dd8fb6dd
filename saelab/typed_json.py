"""Typed results back from JSON: check a `to_dict()` against a dataclass's field annotations, field by field.

Every result dataclass that is saved as JSON reads itself back with `from_dict`, and most of those are one call
here (`from_checked_dict`), so a saved run reloads into the same types and a wrong or foreign file gets a
message naming the object and the field — never a KeyError or TypeError from deep inside a figure.

The rules, from the annotations (resolved with `typing.get_type_hints`):
  * a field without a default must be present; unknown keys are ignored (a newer version's fields, or values
    `to_dict` derives, such as a CV mean);
  * `int`, `str`, `bool` must be exactly that (a bool is not an int); `float` takes any number, and None —
    strict JSON has no NaN, so `storage.jsonable` writes NaN as null — reads back as NaN; `X | None` takes None;
  * `list[X]`, `tuple[X, ...]`, `dict[str, X]` are checked element by element; `Any`, bare `dict`/`list`
    only by kind; `Literal[...]` by value; `np.ndarray` becomes a float64 array (None → NaN);
  * a nested dataclass with a `from_dict` is built by it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

from saelab.errors import CorruptFileError, SaelabError

T = TypeVar("T")
Error = type[SaelabError]
_MISSING = object()


def _got(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value(value: Any, tp: Any, where: str, error: Error = CorruptFileError) -> Any:
    """`value` checked against (and converted to) the annotation `tp`; `error` names `where` when it does not fit."""
    import numpy as np

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return check_value(value, option, where, error)
            except SaelabError:
                continue
        raise error(f"{where} must be {_name(tp)}, got {_got(value)}.")
    if origin is Literal:
        if value in args:
            return value
        raise error(f"{where} must be one of {list(args)}, got {_got(value)}.")
    if tp is float:
        if value is None:
            return math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise error(f"{where} must be a number, got {_got(value)}.")
    if tp in (int, str, bool):
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
        raise error(f"{where} must be {'an' if tp is int else 'a'} {tp.__name__}, got {_got(value)}.")
    if tp is np.ndarray:
        rows = check_value(value, list, where, error)
        try:
            return np.array(_nan_for_none(rows), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise error(f"{where} must be a (nested) list of numbers: {err}.") from err
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise error(f"{where} must be a list, got {_got(value)}.")
        return [check_value(v, args[0], f"{where}[{i}]", error) for i, v in enumerate(value)] if args else value
    if tp is tuple or origin is tuple:
        if not isinstance(value, list | tuple):
            raise error(f"{where} must be a list, got {_got(value)}.")
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(value) != len(args):
            raise error(f"{where} must hold {len(args)} values, got {len(value)}.")
        return tuple(check_value(v, a, f"{where}[{i}]", error) for i, (v, a) in enumerate(zip(value, args)))
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise error(f"{where} must be a JSON object, got {_got(value)}.")
        if not args:
            return dict(value)
        return {check_value(k, args[0], f"{where} key", error): check_value(v, args[1], f"{where}[{k!r}]", error)
                for k, v in value.items()}  # fmt: skip
    if dataclasses.is_dataclass(tp) and hasattr(tp, "from_dict"):
        if not isinstance(value, Mapping):
            raise error(f"{where} must be a JSON object ({tp.__name__}), got {_got(value)}.")
        try:
            return tp.from_dict(value)
        except SaelabError as err:
            raise error(f"{where}: {err}") from err
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise error(f"{where} is not a valid {tp.__name__}: {err}") from err
    return value


def _nan_for_none(rows: Any) -> Any:
    if rows is None:
        return math.nan
    return [_nan_for_none(r) for r in rows] if isinstance(rows, list) else rows


def required(data: Mapping[str, Any], key: str, tp: Any, what: str, error: Error = CorruptFileError) -> Any:
    """`data[key]` checked against `tp`; a missing key raises `error` naming `what` and the key."""
    if key not in data:
        raise error(f"{what} is missing {key!r}.")
    return check_value(data[key], tp, f"{what}.{key}", error)


def checked_fields(cls: type, data: Any, *, what: str | None = None, error: Error = CorruptFileError,
                   skip: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """Constructor arguments for dataclass `cls` from `data` (its `to_dict()`), each checked by its annotation.

    Fields in `skip` are left to the caller; a field with a default that `data` lacks is left out (the default
    applies)."""
    what = what or cls.__name__
    if not isinstance(data, Mapping):
        raise error(f"{what} must be a JSON object, got {_got(data)}.")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    missing = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        value = data.get(f.name, _MISSING)
        if value is _MISSING:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                missing.append(f.name)
            continue
        out[f.name] = check_value(value, hints[f.name], f"{what}.{f.name}", error)
    if missing:
        raise error(f"{what} is missing {missing}; it is not a saved {cls.__name__}.")
    return out


def from_checked_dict(cls: Callable[..., T], data: Any, *, what: str | None = None,
                      error: Error = CorruptFileError, **given: Any) -> T:  # fmt: skip
    """`cls(**checked_fields(cls, data), **given)`: a dataclass from its `to_dict()`, every field checked; the
    dataclass's own checks (`__post_init__`) run too and raise their own `SaelabError`."""
    kwargs = checked_fields(cls, data, what=what, error=error, skip=tuple(given))  # type: ignore[arg-type]
    try:
        return cls(**kwargs, **given)
    except SaelabError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise error(f"{what or getattr(cls, '__name__', cls)} could not be rebuilt: {err}") from err


def read_checked(cls: Any, path: Any) -> Any:
    """`cls.from_dict` of the JSON file at `path`; a file that is not a saved `cls` raises `CorruptFileError`
    naming the file and the field."""
    from saelab.storage import read_json

    data = read_json(path)
    try:
        return cls.from_dict(data)
    except SaelabError as err:
        raise CorruptFileError(f"{path}: {err}") from err


__all__ = ["check_value", "checked_fields", "from_checked_dict", "read_checked", "required"]
