"""
Open Job Description templates, submitted as they are: the body of
C{POST /api/v1/jobs} with C{openjd} (L{openjd_submission}), the template
read from a file or text, and a check of it with C{openjd-model} before it
is sent, when that is installed (the master checks it anyway).

Nothing here needs more than the standard library: PyYAML reads YAML when
it is importable (else YAML text goes to the master as text, and the master
reads it), and C{openjd-model} checks the template when it is importable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from ._errors import MasterdError

#: What C{submit_openjd} takes as its template: the template itself (a
#: mapping), its YAML or JSON text, or the path of a C{.yaml}, C{.yml} or
#: C{.json} file holding it. (Union, not |: the client runs on Python 3.9.)
Template = Union[Mapping[str, Any], str, "os.PathLike[str]"]

#: The names of template files: a string ending so (and on one line) is a path.
SUFFIXES = (".yaml", ".yml", ".json")

#: The job fields that go with a template (the template gives the rest:
#: its name is the job's title, its steps the layers).
JOB_FIELDS = (
    "priority",
    "weight",
    "project",
    "paused",
    "max_retries",
    "limits",
    "max_running",
    "preemptible",
    "metadata",
)


class TemplateTextError(ValueError):
    """
    A template's text that is neither JSON nor YAML; the message names it
    (C{render.yaml line 3, column 5: ...}).
    """


def is_path(template: object) -> bool:
    """
    Whether C{template} names a file rather than holding the template: an
    C{os.PathLike}, or a one-line string ending in C{.yaml}, C{.yml} or
    C{.json}.
    """
    if isinstance(template, os.PathLike):
        return True
    return (
        isinstance(template, str)
        and "\n" not in template
        and template.strip().lower().endswith(SUFFIXES)
    )


def read_template(template: Template) -> tuple[dict[str, Any] | str, Path | None]:
    """
    The template as it is sent, and the directory its relative paths are
    taken from (the file's; C{None}: the current one). A mapping is sent as
    it is; a file or text is read as JSON, or as YAML when PyYAML is
    importable, else it is sent as its text (the master reads YAML).

    @raise OSError: the file cannot be read.
    @raise TemplateTextError: its text is not JSON or YAML, or it is not UTF-8.
    @raise TypeError: C{template} is none of these.
    """
    if isinstance(template, Mapping):
        return dict(template), None
    if is_path(template):
        path = Path(template)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TemplateTextError(f"{path}: not UTF-8 text") from None
        suffix = path.suffix.lower()
        return template_text(text, str(path), suffix if suffix in SUFFIXES else None), path.parent
    if isinstance(template, str):
        return template_text(template, "the template", None), None
    raise TypeError(
        "a template is a mapping, its YAML or JSON text, or the path of a .yaml or .json file,"
        f" not {type(template).__name__}"
    )


def template_text(text: str, name: str, suffix: str | None) -> dict[str, Any] | str:
    """
    A template's text read: JSON for a C{.json} file (or text that starts
    with C{{}), else YAML if PyYAML is importable, else the text as it is.

    @raise TemplateTextError: naming C{name} and what is wrong.
    """
    # Imported here: _jobfile reads job files for masterctl, and imports it.
    from ._context import UsageError
    from ._jobfile import _json, _yaml

    looks_json = suffix == ".json" or (suffix is None and text.lstrip().startswith("{"))
    try:
        if looks_json:
            try:
                document = _json(name, text)
            except UsageError:
                # YAML reads more than JSON ({a: b}); the JSON error if not.
                if suffix == ".json" or not _has_yaml():
                    raise
                document = _yaml(name, text)
        elif _has_yaml():
            document = _yaml(name, text)
        else:
            return text
    except UsageError as e:
        raise TemplateTextError(str(e)) from None
    if not isinstance(document, dict):
        raise TemplateTextError(f"{name}: a job template is one mapping, not {_kind(document)}")
    return document


def openjd_submission(
    template: Template,
    parameters: Mapping[str, Any] | None = None,
    **job_fields: Any,
) -> dict[str, Any]:
    """
    The body of C{POST /api/v1/jobs} for an OpenJD template: the template
    (as L{read_template} has it) and the parameters' values as given, with
    the job fields given (C{priority}, C{project}, ...) beside them.
    Nothing is checked here but the template's text.

    @raise MasterdError: the template's text is not JSON or YAML (400,
        C{invalid_field}, C{details["field"]} C{"openjd.template"}).
    @raise OSError: the template's file cannot be read.
    """
    body, _ = _body(template, parameters, job_fields)
    return body


def _body(
    template: Template, parameters: Mapping[str, Any] | None, job_fields: Mapping[str, Any]
) -> tuple[dict[str, Any], Path | None]:
    try:
        document, directory = read_template(template)
    except TemplateTextError as e:
        raise _invalid("openjd.template", str(e)) from None
    if parameters is not None and not isinstance(parameters, Mapping):
        raise TypeError(f"parameters is a mapping of name to value, not {parameters!r}")
    body: dict[str, Any] = {
        "openjd": {"template": document, "parameters": dict(parameters or {})},
    }
    for key, value in job_fields.items():
        if value is None:
            continue
        if key == "limits" and not isinstance(value, str):
            value = list(value)
        elif key == "metadata":
            value = dict(value)
        body[key] = value
    return body, directory


def check_openjd(body: Mapping[str, Any], directory: Path | None = None) -> bool:
    """
    Check the template and parameters of a L{openjd_submission} body with
    C{openjd-model} as the master will: the template decoded, the values
    checked against their definitions (types, constraints, allowed values;
    defaults for those left out), the job instantiated. Relative paths are
    taken from C{directory} (the template file's) or the current one.
    Returns whether it checked (C{False}: C{openjd-model} is not installed,
    and the master alone will).

    @raise MasterdError: what the model found, in its words (400,
        C{invalid_field}, C{details["field"]} the part at fault:
        C{openjd.template.steps[0].name}, C{openjd.parameters.Frames}), as
        the master would answer; C{details["local"]} is C{True}.
    """
    try:
        from openjd.model import (
            DocumentType,
            create_job,
            decode_job_template,
            document_string_to_object,
            preprocess_job_parameters,
        )
        from openjd.model.v2023_09 import ExtensionName
    except ImportError:
        return False
    openjd = body["openjd"]
    template = openjd["template"]
    if isinstance(template, str):
        try:
            template = document_string_to_object(document=template, document_type=DocumentType.YAML)
        except ValueError as e:
            raise _invalid("openjd.template", str(e), local=True) from None
    # Every extension this model knows: the master says which it supports.
    extensions = [extension.value for extension in ExtensionName]
    try:
        job_template = decode_job_template(template=template, supported_extensions=extensions)
    except ValueError as e:
        raise _invalid(_template_field(str(e)), str(e), local=True) from None
    here = Path.cwd()
    values = {str(name): _value_text(value) for name, value in openjd["parameters"].items()}
    try:
        processed = preprocess_job_parameters(
            job_template=job_template,
            job_parameter_values=values,
            job_template_dir=directory or here,
            current_working_dir=here,
        )
        create_job(job_template=job_template, job_parameter_values=processed)
    except ValueError as e:
        # A value out of its definition, or one that makes a step wrong
        # (a range that is not one): the model's path to it.
        field = _template_field(str(e))
        if field == "openjd.template":
            field = _parameter_field(str(e))
        raise _invalid(field, str(e), local=True) from None
    return True


def _value_text(value: Any) -> str:
    # OpenJD's parameter values are strings ("5" for an INT), as its own CLI
    # takes them; a number given as a number is its text.
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


# "1 validation errors for JobTemplate\nsteps[0] -> name:\n\tString should ..."
_LOCATION = re.compile(r"^(\S[^\n]*?):$", re.MULTILINE)
# "Value (9) for parameter N must be ...", "... required job parameters: N",
# "... not defined in the template: Bogus"
_PARAMETER = re.compile(r"(?:for parameter|parameters:|template:) ([A-Za-z_][A-Za-z0-9_]*)\b")


def _template_field(message: str) -> str:
    lines = message.split("\n", 1)
    if len(lines) == 2 and "validation error" in lines[0]:
        found = _LOCATION.search(lines[1])
        if found:
            return "openjd.template." + found[1].replace(" -> ", ".")
    return "openjd.template"


def _parameter_field(message: str) -> str:
    found = _PARAMETER.search(message)
    return f"openjd.parameters.{found[1]}" if found else "openjd.parameters"


def _invalid(field: str, message: str, local: bool = False) -> MasterdError:
    details: dict[str, Any] = {"field": field}
    if local:
        details["local"] = True
    return MasterdError(400, "invalid_field", message, details)


def _has_yaml() -> bool:
    try:
        import yaml  # noqa: F401
    except ImportError:
        return False
    return True


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    return "nothing" if value is None else type(value).__name__
