"""
An OpenJD job template as a submitter sends it, turned into an instantiated
C{Job} by openjd-model alone: text to an object (JSON or YAML, safely and
within bounds), the object to a C{JobTemplate}, the parameter values
checked against their definitions, and the job created.

Every refusal is an L{InvalidField} (400) whose message is openjd-model's
and whose field is the path of what it names (C{openjd.template.steps[0].name},
C{openjd.parameters.Frames}); what the library cannot say (a YAML text
that expands past the limits) is said the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openjd.model import (
    DecodeValidationError,
    DocumentType,
    Job,
    JobParameterValues,
    JobTemplate,
    create_job,
    decode_job_template,
    document_string_to_object,
    preprocess_job_parameters,
)

from masterd.errors import InvalidField, Unprocessable
from masterd.schema._paths import badString, join

#: The extensions of jobtemplate-2023-09 a template may use: those the
#: reference agent runs (masterd.agent.openjd). EXPR and WRAP_ACTIONS are
#: not taken: a step's template-scope bindings would have to travel with
#: every task (docs/openjd.md, "Not supported").
SUPPORTED_EXTENSIONS = ("TASK_CHUNKING", "REDACTED_ENV_VARS", "FEATURE_BUNDLE_1")

TEMPLATE = "openjd.template"
PARAMETERS = "openjd.parameters"

#: The most values (objects, arrays, strings, numbers) a template may hold,
#: counted as if its YAML aliases were written out: a "billion laughs" text
#: of a few hundred bytes is refused here, before anything walks it again.
MAX_NODES = 100_000
#: The deepest a template may nest (OpenJD's own are about 10 deep).
MAX_DEPTH = 64


def _refuse(field: str, message: str) -> InvalidField:
    return InvalidField(field, message)


def templateObject(template: str | dict[str, Any]) -> dict[str, Any]:
    """
    The template as an object: a JSON or YAML text decoded (openjd-model's
    own loader: YAML's safe loader, no tags that build objects), then held
    to plain JSON values within L{MAX_NODES} and L{MAX_DEPTH}.
    """
    if isinstance(template, str):
        kind = DocumentType.JSON if template.lstrip().startswith("{") else DocumentType.YAML
        try:
            document = document_string_to_object(document=template, document_type=kind)
        except DecodeValidationError as e:
            raise _refuse(TEMPLATE, str(e)) from None
        except (RecursionError, MemoryError, ValueError, TypeError, OverflowError):
            # Past what the loader itself catches (nesting, huge numbers).
            raise _refuse(
                TEMPLATE, f"The document is not a valid {kind.value} document we can read."
            ) from None
    else:
        document = template
    checkValues(document, TEMPLATE)
    return document


def checkValues(document: Any, path: str) -> None:
    """
    Refuse what is not plain JSON, or too much of it: a YAML date, set or
    binary, a key that is not a string, NaN or infinity, a NUL or a lone
    surrogate (PostgreSQL keeps neither), more than L{MAX_NODES} values
    (aliases counted each time they are used) or deeper than L{MAX_DEPTH}.
    Iterative: no depth of input makes it recurse.
    """
    pending: list[tuple[Any, str, int]] = [(document, path, 1)]
    seen = 0
    while pending:
        value, where, depth = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise _refuse(
                path,
                f"holds more than {MAX_NODES} values (YAML aliases counted each time they "
                "are used)",
            )
        if depth > MAX_DEPTH:
            raise _refuse(where, f"is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _refuse(where, f"has a key that is not a string ({key!r:.50})")
                problem = badString(key)
                if problem is not None:
                    raise _refuse(where, f"has a key that {problem}")
                pending.append((item, join(where, key), depth + 1))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                pending.append((item, join(where, i), depth + 1))
        elif isinstance(value, str):
            problem = badString(value)
            if problem is not None:
                raise _refuse(where, problem)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _refuse(where, "must be a finite number")
        elif value is not None and not isinstance(value, bool | int):
            raise _refuse(where, f"is a {type(value).__name__}, which a JSON template cannot hold")


# -- openjd-model's messages, with the field they name ---------------------------

#: One error of pydantic_validationerrors_to_str: "loc -> loc:\n\tmessage".
_ERROR = re.compile(r"^(?P<loc>\S[^\n]*):\n\t(?P<msg>.*?)(?=\n\S|\Z)", re.M | re.S)
_ROOT = re.compile(r"^(?P<model>JobTemplate|Job): (?P<msg>.*?)(?=\n\S|\Z)", re.M | re.S)
_INDEX = re.compile(r"^(?P<name>.*?)((?:\[\d+\])+)$")


#: The tags pydantic puts in a location when it goes through a union
#: discriminated by type (openjd-model's own formatting leaves them in).
_TAGS = re.compile(r"^(?:INT|FLOAT|STRING|PATH|BOOL|RANGE_EXPR|CHUNK\[INT\]|LIST\[[A-Z]+\])$")
#: Locations openjd-model names otherwise than the template does.
_ALIASES = {"step": "steps"}


def _locPath(base: str, loc: str) -> str:
    path = base
    parts = [part for part in loc.split(" -> ") if not _TAGS.match(part)]
    if parts:
        head = _INDEX.match(parts[0])
        if head is not None and head.group("name") in _ALIASES:
            parts[0] = _ALIASES[head.group("name")] + parts[0][len(head.group("name")) :]
    for part in parts:
        match = _INDEX.match(part)
        if match is None:
            path = join(path, part)
            continue
        if match.group("name"):
            path = join(path, match.group("name"))
        for index in re.findall(r"\[(\d+)\]", match.group(2)):
            path = join(path, int(index))
    return path


def modelError(message: str, base: str = TEMPLATE) -> InvalidField:
    """
    openjd-model's message as a 400 naming the field of its first error;
    the others (when there are several) follow in the message.
    """
    errors = [(m.group("loc"), m.group("msg").strip()) for m in _ERROR.finditer(message)]
    errors += [("", m.group("msg").strip()) for m in _ROOT.finditer(message)]
    if not errors:
        return InvalidField(base, message.strip())
    loc, first = errors[0]
    field = _locPath(base, loc) if loc else base
    rest = "; ".join(f"{_locPath(base, other) if other else base}: {text}"
                     for other, text in errors[1:])  # fmt: skip
    return InvalidField(field, first + (f" (and {len(errors) - 1} more: {rest})" if rest else ""))


_NAMED = (
    re.compile(r"for parameter (?P<name>[A-Za-z_][A-Za-z0-9_]*)"),
    re.compile(r"^Parameter (?P<name>[A-Za-z_][A-Za-z0-9_]*)\b"),
    re.compile(r"parameters that are not defined in the template: (?P<name>[^,\s]+)"),
    re.compile(r"Values missing for required job parameters: (?P<name>[^,\s]+)"),
)


def parameterError(message: str) -> InvalidField:
    """
    A parameter value refused by openjd-model ("Value (7) for parameter N
    must be at most 5."), naming C{openjd.parameters.N}; every line of the
    model's message is kept.
    """
    lines = [line for line in message.strip().splitlines() if line.strip()] or [message]
    for pattern in _NAMED:
        match = pattern.search(lines[0])
        if match:
            return InvalidField(join(PARAMETERS, match.group("name")), " ".join(lines))
    return InvalidField(PARAMETERS, " ".join(lines))


# -- decoding and instantiating -----------------------------------------------------


def _unformatted(document: dict[str, Any]) -> InvalidField:
    """
    The first of pydantic's errors for a template whose errors openjd-model
    fails to format (0.14 raises IndexError for an error of the whole
    template, such as a dependency cycle): parsed again, the same way, to
    say it.
    """
    from openjd.model._parse import _parse_model
    from openjd.model.v2023_09 import JobTemplate as JobTemplate2023
    from pydantic import ValidationError

    context = JobTemplate2023.model_parsing_context_type(supported_extensions=SUPPORTED_EXTENSIONS)
    try:
        _parse_model(model=JobTemplate2023, obj=document, context=context)
    except ValidationError as e:
        errors = e.errors()
        if errors:
            first = errors[0]
            error = first.get("ctx", {}).get("error")
            message = str(error) if first["type"] == "value_error" and error else first["msg"]
            loc = " -> ".join(
                f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"] if p != "__root__"
            ).replace(" -> [", "[")
            return InvalidField(_locPath(TEMPLATE, loc) if loc else TEMPLATE, message)
    except Exception:
        pass
    return InvalidField(TEMPLATE, "is not a valid job template")


def decodeTemplate(template: str | dict[str, Any]) -> JobTemplate:
    document = templateObject(template)
    try:
        return decode_job_template(template=document, supported_extensions=SUPPORTED_EXTENSIONS)
    except DecodeValidationError as e:
        raise modelError(str(e)) from None
    except IndexError:
        raise _unformatted(document) from None
    except Exception as e:
        # Whatever else the library raises on input it did not expect is
        # the template's fault, never a 500.
        raise InvalidField(TEMPLATE, str(e) or type(e).__name__) from None


def _inputValue(value: str | int | float) -> str | int:
    """
    A parameter value as the submitter wrote it, for openjd-model: a number
    such as 3.0 counts as the integer 3 (JSON Schema's rule, and the API's).
    """
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**63:
            return int(value)
        return repr(value)
    return value


def instantiate(
    template: str | dict[str, Any], parameters: Mapping[str, str | int | float]
) -> tuple[JobTemplate, JobParameterValues, Job]:
    """
    Decode the template, check the parameter values against it (defaults
    applied; PATH values kept as given: the master has no submitter's
    directory to resolve them against) and create the job.
    """
    decoded = decodeTemplate(template)
    try:
        values = preprocess_job_parameters(
            job_template=decoded,
            job_parameter_values={k: _inputValue(v) for k, v in parameters.items()},  # type: ignore[misc]
            job_template_dir=Path(),
            current_working_dir=Path(),
            allow_job_template_dir_walk_up=True,
        )
    except Exception as e:
        raise parameterError(str(e) or type(e).__name__) from None
    try:
        job = create_job(job_template=decoded, job_parameter_values=values)
    except DecodeValidationError as e:
        raise modelError(str(e)) from None
    except OverflowError:
        # openjd-model counts a range's values with len(): values that make
        # one of more than 2**63 (a range to a huge parameter) overflow it.
        raise Unprocessable(
            PARAMETERS, "these values make a parameter space too large to count (over 2**63 tasks)"
        ) from None
    except Exception as e:
        raise InvalidField(TEMPLATE, str(e) or type(e).__name__) from None
    return decoded, values, job
