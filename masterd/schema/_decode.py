"""
Decoding what clients send into the declared types, refusing everything the
master cannot store or send back, with an error that names the field.

The fast path is msgspec's decoder (one pass in C: parsing, types,
constraints, unknown fields); what no type can say is checked after it:
NUL characters (only when the raw text holds an escaped one), and the
depth, numbers and strings of free-form fields. When the decoder refuses
the input, the slower code in L{_paths} finds the exact field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

import msgspec
import msgspec.inspect as mi
from attrs import frozen

from masterd.errors import InvalidField, Unprocessable

from . import _paths
from ._types import MAX_SAFE_INTEGER, Model

T = TypeVar("T")


class MalformedJSON(ValueError):
    """
    The input is not JSON at all (or not UTF-8); C{line} and C{column} say
    where, when known.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@frozen
class InputLimits:
    """
    What any input may hold (C{limits.max_json_depth}).
    """

    max_depth: int = 32


DEFAULT_LIMITS = InputLimits()

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(data: bytes | str, kind: type[T], limits: InputLimits = DEFAULT_LIMITS) -> T:
    """
    Decode and check C{data} as a C{kind}.

    @raise InvalidField: naming the field at fault.
    @raise MalformedJSON: if C{data} is not JSON.
    """
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        value: T = decoder.decode(data)
    except msgspec.ValidationError as e:
        integral = _integralFloats(data, kind, str(e))
        if integral is None:
            raise _refused(str(e), kind, data, limits) from None
        value = integral
    except msgspec.DecodeError as e:
        raise _undecodable(data, str(e), limits) from None
    except RecursionError:
        raise _tooDeep(data, limits) from None
    # A NUL can only be written escaped: the walk over every string is
    # needed only when the text holds one.
    if (b"\\u0000" in data) if isinstance(data, bytes) else ("\\u0000" in data):
        _checkStrings(msgspec.to_builtins(value), "")
    if isinstance(value, Model):
        checkModel(value, "", 1, limits)
    return value


def convert(values: Mapping[str, Any], kind: type[T], limits: InputLimits = DEFAULT_LIMITS) -> T:
    """
    Check values that did not come as JSON (query parameters: strings,
    converted to the declared types).
    """
    for name, value in values.items():
        if isinstance(value, str):
            problem = _paths.badString(value)
            if problem is not None:
                raise InvalidField(name, problem)
    try:
        converted: T = msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as e:
        raise _refused(str(e), kind, None, limits) from None
    return converted


def _integralFloats(data: bytes | str, kind: Any, error: str) -> Any:
    """
    JSON has one number type: 3.0 is an integer to JSON Schema (and to
    JavaScript), though msgspec wants 3. When that is all that is wrong,
    decode again (slowly) with integral numbers as integers.
    """
    # An integer alone, or in a union (an id or an object, say).
    if not re.match(r"Expected `[^`]*\bint\b[^`]*`, got `float`", error):
        return None

    def number(text: str) -> float | int:
        value = float(text)
        return int(value) if value.is_integer() and abs(value) < 2**63 else value

    try:
        document = json.loads(data, parse_float=number)
        return msgspec.convert(document, kind, strict=True)
    except (ValueError, RecursionError, msgspec.ValidationError):
        return None


# -- after decoding ------------------------------------------------------------


def _freeformPlan(kind: type) -> tuple[tuple[str, bool], ...]:
    """
    The fields of a model to check after decoding: (name, free-form) for its
    free-form fields and (name, False) for its fields that hold models.
    """
    plan = getattr(kind, "_freeform_plan", None)
    if plan is not None and plan[0] is kind:
        return plan[1]  # type: ignore[no-any-return]
    found: list[tuple[str, bool]] = [(name, True) for name in kind.__freeform__]  # type: ignore[attr-defined]
    for name, hint in get_type_hints(kind).items():
        if name in kind.__freeform__:  # type: ignore[attr-defined]
            continue
        for option in getattr(hint, "__args__", (hint,)):
            if isinstance(option, type) and issubclass(option, Model) and _freeformPlan(option):
                found.append((name, False))
                break
    result = tuple(found)
    type.__setattr__(kind, "_freeform_plan", (kind, result))
    return result


def checkModel(value: Model, path: str, depth: int, limits: InputLimits) -> None:
    for name, freeform in _freeformPlan(type(value)):
        item = getattr(value, name)
        where = _paths.join(path, name)
        if freeform:
            checkFreeform(item, where, depth + 1, limits)
        elif isinstance(item, Model):
            checkModel(item, where, depth + 1, limits)


def checkFreeform(value: Any, path: str, depth: int, limits: InputLimits) -> None:
    """
    Free-form JSON (job metadata) as PostgreSQL's jsonb and every JSON
    reader can keep it: no deeper than the limit, numbers within ±(2^53 -
    1) (the FreeJSON schema says so; JSON Schema cannot tell 2^60 from
    2^60.0, so floats are held to it too), strings without NUL or lone
    surrogates.
    """
    for where, item, level in _paths.walk(value, path):
        if level + depth - 1 > limits.max_depth:
            raise Unprocessable(
                where, f"is nested deeper than {limits.max_depth} levels (limits.max_json_depth)"
            )
        if isinstance(item, str):
            problem = _paths.badString(item)
            if problem is not None:
                raise InvalidField(where, problem)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise InvalidField(
                    where, "is an integer beyond ±(2^53 - 1), which JSON cannot carry exactly"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidField(where, "must be a finite number")
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise InvalidField(where, "is a number beyond ±(2^53 - 1)")


def _checkStrings(document: Any, path: str) -> None:
    for where, item, _ in _paths.walk(document, path):
        if isinstance(item, str):
            problem = _paths.badString(item)
            if problem is not None:
                raise InvalidField(where, problem)


# -- refused: what to tell the client ------------------------------------------------

_AT = re.compile(r"^(?P<what>.*?)(?: - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _segments(path: str) -> list[str | int | None]:
    """
    msgspec's C{.tasks[3].frames} as C{["tasks", 3, "frames"]}; C{None} for
    a mapping key it does not name (C{[...]}).
    """
    out: list[str | int | None] = []
    for match in _SEGMENT.finditer(path):
        name, index = match.groups()
        if name is not None:
            out.append(name)
        elif index == "...":
            out.append(None)
        else:
            out.append(int(index))
    return out


def _typeAt(info: mi.Type, segments: list[str | int | None]) -> mi.Type | None:
    for segment in segments:
        info = _unwrap(info, segment)
        if isinstance(info, mi.StructType) and isinstance(segment, str):
            found = [f.type for f in info.fields if f.encode_name == segment]
            if not found:
                return None
            info = found[0]
        elif isinstance(info, mi.ListType | mi.SetType | mi.VarTupleType):
            info = info.item_type
        elif isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return None
    return _unwrap(info, None)


def _unwrap(info: mi.Type, segment: str | int | None) -> mi.Type:
    """
    The member of a union that a path segment goes into (or the only one
    that is not null).
    """
    info = _bare(info)
    if not isinstance(info, mi.UnionType):
        return info
    types = [_bare(t) for t in info.types if not isinstance(t, mi.NoneType)]
    for t in types:
        if isinstance(segment, str) and isinstance(t, mi.StructType | mi.DictType):
            return t
        if isinstance(segment, int) and isinstance(t, mi.ListType | mi.VarTupleType):
            return t
    return types[0] if len(types) == 1 else info


def _pathName(segments: list[str | int | None]) -> str:
    path = ""
    for segment in segments:
        if segment is not None:
            path = _paths.join(path, segment)
    return path


def _refused(error: str, kind: Any, data: bytes | str | None, limits: InputLimits) -> Exception:
    try:
        return _refusedExactly(error, kind, data, limits)
    except Exception:
        # Explaining must never fail the request: say what msgspec said.
        return InvalidField("(body)", error[:1000])


def _refusedExactly(
    error: str, kind: Any, data: bytes | str | None, limits: InputLimits
) -> Exception:
    match = _AT.match(error)
    assert match is not None
    what, segments = match.group("what"), _segments(match.group("path") or "")
    if match.group("key"):
        return _badKey(what, kind, data, segments)
    if None in segments and data is not None:
        if what in _OUT_OF_RANGE:
            return _outOfRange(data, segments)
        exact = _exactPath(data, kind, segments)
        if exact is not None:
            return exact
    return _explain(what, kind, segments)


_OUT_OF_RANGE = ("Integer value out of range", "Number out of range")


def _badKey(
    what: str, kind: Any, data: bytes | str | None, segments: list[str | int | None]
) -> InvalidField:
    """
    A mapping key the type refuses (an environment variable name with
    C{=}): name the key, found by trying each against the key's type.
    """
    path = _pathName(segments)
    info = _typeAt(mi.type_info(kind), segments)
    problem = _explain(what, kind, []).message
    if isinstance(info, mi.DictType) and data is not None and None not in segments:
        keyType = _bare(info.key_type)
        try:
            node: Any = json.loads(data)
            for segment in segments:
                node = node[segment]
        except Exception:
            node = {}
        for key in node if isinstance(node, dict) else ():
            if isinstance(keyType, mi.StrType) and not _keyFits(key, keyType):
                return InvalidField(_paths.join(path, key), f"is not a valid key: {problem}")
    return InvalidField(_paths.shown(path), f"has a key that is not valid: {problem}")


def _keyFits(key: str, info: mi.StrType) -> bool:
    if info.min_length is not None and len(key) < info.min_length:
        return False
    if info.max_length is not None and len(key) > info.max_length:
        return False
    return info.pattern is None or re.search(info.pattern, key) is not None


class _Huge:
    """
    An integer of too many digits to convert (standing in for it).
    """


def _outOfRange(data: bytes | str, segments: list[str | int | None]) -> InvalidField:
    """
    Find the number msgspec could not hold (beyond 64 bits, or beyond a
    double) below the part of C{segments} it named.
    """
    prefix = _pathName(segments[: segments.index(None)])
    try:
        document = json.loads(data, parse_int=lambda s: _Huge() if len(s) > 40 else int(s))
    except (ValueError, RecursionError):
        return InvalidField(_paths.shown(prefix), "holds a number out of range")
    node: Any = document
    for segment in segments[: segments.index(None)]:
        node = node[segment]
    for where, item, _ in _paths.walk(node, prefix):
        if isinstance(item, _Huge) or (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and (not math.isfinite(item) or not -(2**63) <= item < 2**64)
        ):
            return InvalidField(where, "is a number out of range")
    return InvalidField(_paths.shown(prefix), "holds a number out of range")


def _exactPath(data: bytes | str, kind: Any, segments: list[str | int | None]) -> Exception | None:
    """
    msgspec does not name mapping keys (C{env[...]}): find the key whose
    value the type refuses, by checking again with that mapping cut down to
    one key at a time (slow, and only for input already refused).
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    at = segments.index(None)
    parent: Any = document
    for segment in segments[:at]:
        try:
            parent = parent[segment]
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(parent, dict):
        return None
    whole = dict(parent)
    try:
        for key, item in whole.items():
            parent.clear()
            parent[key] = item
            try:
                msgspec.convert(document, kind, strict=True)
            except msgspec.ValidationError as e:
                inner = _AT.match(str(e))
                assert inner is not None
                found = _segments(inner.group("path") or "")
                if len(found) > at and found[at] is None:
                    found[at] = key
                    return _explain(inner.group("what"), kind, found)
    except Exception:
        return None
    return None


def _explain(what: str, kind: Any, segments: list[str | int | None]) -> InvalidField:
    """
    msgspec's message, said the way the rest of the API says it.
    """
    path = _pathName(segments)
    m = re.match(r"Object missing required field `([^`]+)`", what)
    if m:
        return InvalidField(_paths.join(path, m.group(1)), "is required")
    m = re.match(r"Object contains unknown field `([^`]+)`", what)
    if m:
        known = _knownFields(kind, segments)
        extra = f"; known: {', '.join(known)}" if known else ""
        return InvalidField(_paths.join(path, m.group(1)), f"is not a known field{extra}")
    m = re.match(r"Expected `([^`]+)`, got `(\w+)`", what)
    if m:
        info = _typeAt(mi.type_info(kind), segments)
        if info is not None:
            want = _describe(info)
        else:
            options = [o for o in m.group(1).split(" | ") if o != "null"] or ["null"]
            want = " or ".join(_TYPE_NAMES.get(o, o) for o in options)
        got = _TYPE_NAMES.get(m.group(2), m.group(2))
        return InvalidField(_paths.shown(path), f"must be {want}, not {got}")
    m = re.match(r"Expected `(\w+)` (>=|<=|>|<) (-?\d+(?:\.\d+)?)$", what)
    if m:
        info = _typeAt(mi.type_info(kind), segments)
        lo, hi = getattr(info, "ge", None), getattr(info, "le", None)
        if lo is not None and hi is not None:
            return InvalidField(_paths.shown(path), f"must be between {lo} and {hi}")
        words = {">=": "at least", "<=": "at most", ">": "above", "<": "below"}
        return InvalidField(_paths.shown(path), f"must be {words[m.group(2)]} {m.group(3)}")
    m = re.match(r"Expected `(str|array|object)` of length (>=|<=) (\d+)$", what)
    if m:
        kindName, op, n = m.group(1), m.group(2), int(m.group(3))
        unit = {"str": "characters", "array": "items", "object": "entries"}[kindName]
        if op == ">=" and n == 1:
            return InvalidField(_paths.shown(path), "must not be empty")
        word = "at least" if op == ">=" else "at most"
        return InvalidField(_paths.shown(path), f"must have {word} {n} {unit}")
    m = re.match(r"Invalid enum value (.*)$", what) or re.match(r"Invalid value (.*)$", what)
    if m:
        allowed = _allowedValues(kind, segments)
        listed = f"one of {', '.join(allowed)}" if allowed else "one of the documented values"
        return InvalidField(_paths.shown(path), f"must be {listed}, not {m.group(1)}")
    if "matching regex" in what:
        return InvalidField(_paths.shown(path), _patternProblem(kind, segments))
    if what in _OUT_OF_RANGE:
        return InvalidField(_paths.shown(path), "is a number out of range")
    # A check of the model itself (__post_init__): "<field>: <problem>".
    m = re.match(r"^([A-Za-z_][\w\[\]\.]*): (.*)$", what, re.S)
    if m:
        inner = m.group(1)
        full = f"{path}.{inner}" if path and not inner.startswith("[") else path + inner
        return InvalidField(full, m.group(2))
    return InvalidField(_paths.shown(path), what)


def _bare(info: mi.Type) -> mi.Type:
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def _describe(info: mi.Type, plural: bool = False) -> str:
    """
    What a value of a type is, for a person: "an array of strings".
    """
    info = _bare(info)
    if isinstance(info, mi.UnionType):
        options = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return " or ".join(_describe(t, plural) for t in options)
    if isinstance(info, mi.ListType | mi.SetType | mi.VarTupleType):
        return "arrays" if plural else f"an array of {_describe(info.item_type, True)}"
    names = {
        mi.IntType: ("an integer", "integers"),
        mi.FloatType: ("a number", "numbers"),
        mi.StrType: ("a string", "strings"),
        mi.BoolType: ("true or false", "booleans"),
        mi.NoneType: ("null", "nulls"),
        mi.DictType: ("an object", "objects"),
        mi.StructType: ("an object", "objects"),
    }
    for cls, (one, many) in names.items():
        if isinstance(info, cls):
            return many if plural else one
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in info.values)
    return "values" if plural else "a value"


def _knownFields(kind: Any, segments: list[str | int | None]) -> list[str]:
    info = _typeAt(mi.type_info(kind), segments)
    if isinstance(info, mi.StructType):
        return [f.encode_name for f in info.fields]
    return []


def _allowedValues(kind: Any, segments: list[str | int | None]) -> list[str]:
    info = _typeAt(mi.type_info(kind), segments[:-1]) if segments else None
    if segments and segments[-1] == "type" and isinstance(info, mi.UnionType):
        return [str(t.tag) for t in info.types if isinstance(t, mi.StructType) and t.tag]
    info = _typeAt(mi.type_info(kind), segments)
    if isinstance(info, mi.LiteralType):
        return [str(v) for v in info.values]
    if isinstance(info, mi.EnumType):
        return [str(v.value) for v in info.cls]
    return []


def _patternProblem(kind: Any, segments: list[str | int | None]) -> str:
    info = _typeAt(mi.type_info(kind), segments)
    pattern = getattr(info, "pattern", None)
    if pattern == r"\S":
        return "must not be blank"
    return f"is not of the expected form ({pattern})" if pattern else "is not of the expected form"


# -- not JSON, or JSON we cannot take ----------------------------------------------------


def _undecodable(data: bytes | str, error: str, limits: InputLimits) -> Exception:
    """
    msgspec refused the text itself: say why as precisely as the standard
    decoder (which takes lone surrogates) lets us.
    """
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        return MalformedJSON("is not UTF-8")
    except RecursionError:
        return _tooDeep(data, limits)
    except json.JSONDecodeError as e:
        return MalformedJSON(
            f"is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", e.lineno, e.colno
        )
    except ValueError as e:
        # An integer of more digits than Python converts.
        return MalformedJSON(f"is not JSON we can read: {e}")
    for where, item, _ in _paths.walk(document, ""):
        if isinstance(item, str):
            problem = _paths.badString(item)
            if problem is not None:
                return InvalidField(_paths.shown(where), problem)
    return MalformedJSON(f"is not valid JSON: {error}")


def _tooDeep(data: bytes | str, limits: InputLimits) -> InvalidField:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    path = _paths.deepPath(raw, limits.max_depth)
    return Unprocessable(
        _paths.shown(path),
        f"is nested deeper than {limits.max_depth} levels (limits.max_json_depth)",
    )
