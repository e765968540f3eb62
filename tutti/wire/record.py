"""Typed wire records: one ``to_dict``/``from_dict`` pair and a JSON Schema, from the fields.

A record is a frozen dataclass deriving :class:`Record`.  Its field types say what a JSON
value may be (``bool``, ``int``, ``float``, ``str``, ``X | None``, ``tuple[X, ...]``,
``dict[str, X]`` and other records); :func:`spec` adds ranges, lengths and choices.  The
parser, the serialiser and the schema all read the same declaration, so they cannot disagree.
Records sent by the server ignore fields they do not know (a newer server may add some);
records clients send are ``STRICT`` and refuse them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Self

__all__ = ["WireError", "Record", "spec", "obj"]


class WireError(ValueError):
    """A payload does not match the contract.  The message names the field."""


def spec(
    *,
    lo: float | None = None,
    hi: float | None = None,
    maxlen: int | None = None,
    one_of: tuple[Any, ...] | None = None,
    unit: str = "",
    default: Any = dataclasses.MISSING,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A record field with limits: numbers in ``lo…hi``, strings and lists of at most
    ``maxlen``, a value from ``one_of``; ``unit`` names what a number counts (for messages)."""
    meta = {"lo": lo, "hi": hi, "maxlen": maxlen, "one_of": one_of, "unit": unit}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def obj(payload: Any, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise WireError(f"{what}: expected a JSON object, got {type(payload).__name__}")
    return payload


class Record:
    """Mixin for frozen dataclasses that cross the network."""

    STRICT: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, every field present (null where there is no value)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, payload: Any, what: str | None = None) -> Self:
        """Check ``payload`` against the fields; :class:`WireError` names the first misfit."""
        what = what or cls.__name__
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        if not isinstance(payload, dict):
            shape = ", ".join(f.name + ("?" if _has_default(f) else "") for f in fields)
            got = type(payload).__name__
            raise WireError(f"{what}: expected a JSON object {{{shape}}}, got {got}")
        d = payload
        if cls.STRICT:
            unknown = set(d) - {f.name for f in fields}
            if unknown:
                known = sorted(f.name for f in fields)
                raise WireError(f"{what}: unknown field(s) {sorted(unknown)}; accepted: {known}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for f in fields:
            if f.name not in d:
                if _has_default(f):
                    continue
                raise WireError(f"{what}: missing field {f.name!r}")
            values[f.name] = _parse(hints[f.name], d[f.name], f"{what}.{f.name}", f.metadata)
        return cls(**values)

    @classmethod
    def json_schema(cls, defs: dict[str, Any]) -> dict[str, Any]:
        """This record as a JSON Schema reference; its definition goes into ``defs``."""
        name = cls.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: records may refer to themselves
            hints = _hints(cls)
            fields = dataclasses.fields(cls)  # type: ignore[arg-type]
            defs[name] = {
                "type": "object",
                "description": (cls.__doc__ or "").strip().split("\n")[0],
                "properties": {f.name: _schema(hints[f.name], f.metadata, defs) for f in fields},
                "required": [f.name for f in fields if not _has_default(f)],
                "additionalProperties": not cls.STRICT,
            }
        return {"$ref": f"#/$defs/{name}"}


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _optional(tp: Any) -> Any | None:
    """``X`` of ``X | None``; None when ``tp`` is not optional."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return None


def _parse(tp: Any, v: Any, what: str, meta: Any) -> Any:  # noqa: C901 - one case per type
    inner = _optional(tp)
    if inner is not None:
        return None if v is None else _parse(inner, v, what, meta)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(v, what)
    if tp is bool:
        if not isinstance(v, bool):
            raise WireError(f"{what}: must be true or false, got {v!r}")
        return v
    if tp is int or tp is float:
        ok = isinstance(v, int) if tp is int else isinstance(v, int | float)
        if isinstance(v, bool) or not ok or (tp is float and not math.isfinite(v)):
            kind = "an integer" if tp is int else "a finite number"
            raise WireError(f"{what}: must be {kind}, got {v!r}")
        _check_range(v, what, meta)
        return float(v) if tp is float else v
    if tp is str:
        if not isinstance(v, str):
            raise WireError(f"{what}: must be a string, got {type(v).__name__}")
        if meta.get("maxlen") is not None and len(v) > meta["maxlen"]:
            raise WireError(f"{what}: must be at most {meta['maxlen']} characters")
        _check_choice(v, what, meta)
        return v
    if origin is tuple:
        if not isinstance(v, list | tuple):
            raise WireError(f"{what}: must be a list")
        if meta.get("maxlen") is not None and len(v) > meta["maxlen"]:
            raise WireError(f"{what}: at most {meta['maxlen']} entries")
        item = typing.get_args(tp)[0]
        return tuple(_parse(item, x, f"{what}[{i}]", {}) for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise WireError(f"{what}: must be an object")
        item = typing.get_args(tp)[1]
        return {k: _parse(item, x, f"{what}[{k!r}]", {}) for k, x in v.items()}
    raise TypeError(f"{what}: no wire form for {tp!r}")  # a declaration error, not input


def _check_range(v: float, what: str, meta: Any) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if lo is not None and hi is not None and not lo <= v <= hi:
        raise WireError(f"{what}: must be from {lo} to {hi}{unit}, got {v}")
    if lo is not None and v < lo:
        raise WireError(f"{what}: must be at least {lo}{unit}, got {v}")
    if hi is not None and v > hi:
        raise WireError(f"{what}: must be at most {hi}{unit}, got {v}")
    _check_choice(v, what, meta)


def _check_choice(v: Any, what: str, meta: Any) -> None:
    choices = meta.get("one_of")
    if choices is not None and v not in choices:
        raise WireError(f"{what}: {v!r} is not one of {list(choices)}")


def _schema(tp: Any, meta: Any, defs: dict[str, Any]) -> dict[str, Any]:  # noqa: C901
    inner = _optional(tp)
    if inner is not None:
        return {"anyOf": [_schema(inner, meta, defs), {"type": "null"}]}
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.json_schema(defs)
    out: dict[str, Any]
    if tp is bool:
        out = {"type": "boolean"}
    elif tp is int or tp is float:
        out = {"type": "integer" if tp is int else "number"}
        if meta.get("lo") is not None:
            out["minimum"] = meta["lo"]
        if meta.get("hi") is not None:
            out["maximum"] = meta["hi"]
    elif tp is str:
        out = {"type": "string"}
        if meta.get("maxlen") is not None:
            out["maxLength"] = meta["maxlen"]
    elif origin is tuple:
        out = {"type": "array", "items": _schema(typing.get_args(tp)[0], {}, defs)}
        if meta.get("maxlen") is not None:
            out["maxItems"] = meta["maxlen"]
    elif origin is dict:
        out = {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1], {}, defs)}
    else:
        raise TypeError(f"no wire form for {tp!r}")
    if meta.get("one_of") is not None:
        out["enum"] = list(meta["one_of"])
    return out
