"""
What the reference agent declares beyond its hardware: the C{cpus} and
C{ram-mb} it reports instead of those detected, and custom OpenJD
C{attributes} (name to values) and C{amounts} (name to a number), from its
options and its YAML file (docs/agent.md). A short name (no dot) is a custom
one: C{renderer} is C{attr.custom.renderer} among attributes and
C{licences} is C{amount.custom.licences} among amounts.
"""

from __future__ import annotations

import re
from typing import Any

from masterd.jobs.models import (
    AMOUNT_NAME_PATTERN,
    ATTRIBUTE_NAME_PATTERN,
    ATTRIBUTE_VALUE_PATTERN,
    MAX_AMOUNT,
)

#: As the master's hello takes them (masterd.talkback.messages.AgentInfo).
MAX_NAMES = 100
MAX_VALUES = 100

_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)
_AMOUNT_NAME = re.compile(AMOUNT_NAME_PATTERN)
_VALUE = re.compile(ATTRIBUTE_VALUE_PATTERN)


def fullName(name: Any, kind: str, where: str) -> str:
    """
    An attribute's (C{kind} "attr") or amount's ("amount") full name, in
    lower case: a short name is a custom one.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a name must be a non-empty string")
    full = name if "." in name or ":" in name else f"{kind}.custom.{name}"
    pattern = _ATTRIBUTE_NAME if kind == "attr" else _AMOUNT_NAME
    if len(full) > 100 or pattern.match(full) is None:
        raise ValueError(
            f"{where}: {name!r} is not a custom OpenJD {kind} name ({kind}.custom.NAME, or"
            " a short NAME: letters, digits and _, not starting with a digit)"
        )
    return full.lower()


def attributes(given: Any, where: str = "attributes") -> dict[str, tuple[str, ...]]:
    """
    A mapping of attribute name to a list of values (or one value).
    """
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(f"{where}: must be a mapping of name to a list of values")
    if len(given) > MAX_NAMES:
        raise ValueError(f"{where}: at most {MAX_NAMES} attributes")
    found: dict[str, tuple[str, ...]] = {}
    for name, values in given.items():
        full = fullName(name, "attr", where)
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or len(values) > MAX_VALUES:
            raise ValueError(f"{where}: {name}: must be a list of at most {MAX_VALUES} values")
        checked: list[str] = []
        for value in values:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ValueError(f"{where}: {name}: {value!r} is not a value")
            text = str(value)
            if len(text) > 100 or _VALUE.match(text) is None:
                raise ValueError(
                    f"{where}: {name}: {text!r} is not an OpenJD attribute value (letters,"
                    " digits, _ and -, starting with a letter or _)"
                )
            checked.append(text.lower())
        found[full] = tuple(sorted({*found.get(full, ()), *checked}))
    return found


def amounts(given: Any, where: str = "amounts") -> dict[str, float]:
    """
    A mapping of amount name to a number (0 or more).
    """
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(f"{where}: must be a mapping of name to a number")
    if len(given) > MAX_NAMES:
        raise ValueError(f"{where}: at most {MAX_NAMES} amounts")
    found: dict[str, float] = {}
    for name, value in given.items():
        full = fullName(name, "amount", where)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: {name}: must be a number")
        if not 0 <= value <= MAX_AMOUNT:
            raise ValueError(f"{where}: {name}: must be between 0 and {MAX_AMOUNT:g}")
        found[full] = float(value)
    return found


def pairs(given: list[str], option: str) -> dict[str, str]:
    """
    C{NAME=VALUE} command-line options, as a mapping.
    """
    found: dict[str, str] = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--{option}: {item!r} is not NAME=VALUE")
        found[name] = value
    return found


def count(value: Any, option: str) -> int | None:
    """
    C{cpus} or C{ram-mb}: a positive integer, or None when not given.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"--{option}: must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--{option}: must be an integer") from None
    if not 1 <= number <= 2**31 - 1:
        raise ValueError(f"--{option}: must be at least 1")
    return number


def capabilities(
    merged: dict[str, Any], attributeOptions: list[str], amountOptions: list[str]
) -> dict[str, Any]:
    """
    The settings from the file's keys (C{merged}) and the command line's
    C{--attribute NAME=V1,V2} and C{--amount NAME=N} (which win, name by
    name).
    """
    declared = attributes(merged.get("attributes"))
    for name, values in pairs(attributeOptions, "attribute").items():
        listed = [v for v in values.split(",") if v]
        declared.update(attributes({name: listed}, "--attribute"))
    offered = amounts(merged.get("amounts"))
    for name, value in pairs(amountOptions, "amount").items():
        offered.update(amounts({name: value}, "--amount"))
    return {
        "cpus": count(merged.get("cpus"), "cpus"),
        "ram_mb": count(merged.get("ram-mb"), "ram-mb"),
        "attributes": declared,
        "amounts": offered,
    }
