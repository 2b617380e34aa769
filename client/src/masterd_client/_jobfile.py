"""
What C{masterctl submit} sends: the JSON body of C{POST /api/v1/jobs}, read
from a job file (YAML or JSON) and/or made from flags. A file's problem is
one line that names the file and, for a syntax error, the line; flags given
with a file override its top-level fields, or add to its lists and
mappings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from ._context import UsageError


def default_title(command: list[str]) -> str:
    """
    A job's title when none is given: its command, as far as it fits.
    """
    text = " ".join(command).strip() or "job"
    return text if len(text) <= 200 else text[:199] + "…"


# -- reading a file -------------------------------------------------------------


def read_job_file(path: str, stdin: TextIO) -> dict[str, Any]:
    """
    The job a file holds: a YAML or JSON mapping (JSON when the name ends
    in C{.json}, YAML for C{.yaml} and C{.yml}; otherwise JSON when the
    text starts with C{{} and reads as JSON, else YAML). C{-} is the
    standard input.

    @raise UsageError: naming the file and what is wrong with it.
    """
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise UsageError(f"{name}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not UTF-8 text") from None
    suffix = os.path.splitext(path.lower())[1]
    if suffix == ".json":
        document = _json(name, text)
    elif suffix in (".yaml", ".yml") or not text.lstrip().startswith("{"):
        document = _yaml(name, text)
    else:
        # Another name (or stdin) holding an object: JSON, most likely;
        # YAML reads the flow mappings JSON cannot ({title: a}).
        try:
            document = _json(name, text)
        except UsageError as error:
            try:
                document = _yaml(name, text)
            except UsageError:
                raise error from None
    if document is None:
        raise UsageError(f"{name}: empty; a job file holds one mapping of a job's fields")
    if not isinstance(document, dict):
        raise UsageError(
            f"{name}: a job file holds one mapping of a job's fields (title, layers, ...),"
            f" not {_kind(document)}"
        )
    _check_json(name, document, "")
    _check_commands(name, document, "")
    return document


def _check_commands(name: str, value: Any, where: str) -> None:
    """
    In YAML, an unquoted placeholder in a flow list (C{[render, {frame}]})
    is a mapping: say so, not the master's "expected a string".
    """
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            if key == "command" and isinstance(item, list):
                for i, argument in enumerate(item):
                    if isinstance(argument, dict) and len(argument) == 1:
                        [(word, empty)] = argument.items()
                        if empty is None:
                            raise UsageError(
                                f"{name}: {inner}[{i}]: {{{word}}} was read as a YAML mapping;"
                                f' quote it: "{{{word}}}"'
                            )
            _check_commands(name, item, inner)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_commands(name, item, f"{where}[{i}]")


def _json(name: str, text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key, value in items:
            if key in mapping:
                raise _Duplicate(key)
            mapping[key] = value
        return mapping

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise UsageError(f"{name} line {e.lineno}, column {e.colno}: {e.msg}") from None
    except _Duplicate as e:
        raise UsageError(f"{name}: the key {e.key!r} is given twice in one object") from None


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _yaml(name: str, text: str) -> Any:
    # Imported only here: the client and masterctl otherwise need nothing
    # outside the standard library (PyYAML comes with the master).
    try:
        import yaml
    except ImportError:
        raise UsageError(
            f"{name}: reading YAML needs PyYAML (pip install pyyaml); or give a .json file"
        ) from None

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys: a layer written twice
        # would vanish without a word. Keys merged in (<<: *base) may be
        # overridden, as YAML says.
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node)
            if isinstance(key, str):
                if key in seen:
                    mark = key_node.start_mark
                    raise UsageError(
                        f"{name} line {mark.line + 1}, column {mark.column + 1}: the key"
                        f" {key!r} is given twice in one mapping"
                    )
                seen.add(key)
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(filter(None, [e.context, e.problem]))
        raise UsageError(f"{name}{where}: {problem or 'not valid YAML'}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{name}: {' '.join(str(e).split())}") from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _check_json(name: str, value: Any, where: str) -> None:
    """
    What YAML reads that JSON cannot say (a date, a non-text key, an
    infinity) is refused here, naming where it is, not sent.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(
                    f"{name}: {where or 'the job'}: the key {key!r} is not text; quote it"
                )
            _check_json(name, item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(name, item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name}: {where}: {value} is not a number JSON can carry")
    elif isinstance(value, date):
        raise UsageError(f"{name}: {where}: {value} was read as a date; quote it to make it text")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise UsageError(f"{name}: {where}: a {type(value).__name__} is not JSON; quote it")


# -- flags over the file ----------------------------------------------------------


#: Flags that set a top-level field: (attribute of the arguments, field).
_SCALARS = (
    ("title", "title"),
    ("frames", "frames"),
    ("chunk", "chunk"),
    ("priority", "priority"),
    ("weight", "weight"),
    ("max_retries", "max_retries"),
    ("timeout", "task_timeout_s"),
    ("stall_timeout", "stall_timeout_s"),
    ("cwd", "cwd"),
    ("project", "project"),
    ("max_running", "max_running"),
)


def job_body(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    """
    The body to submit: the file's (if C{--file}), with the flags given
    over it. Scalars replace the file's; C{--env} is merged into its env,
    C{--cpus}/C{--ram-mb}/C{--gpus}/C{--gpu-memory-mb} into its
    requirements; C{--tag}, C{--limits} and C{--depends-on} are added to
    its lists. The command after C{--} is the job's top-level command.
    """
    name = args.file
    body = read_job_file(name, stdin) if name is not None else {}
    where = ("<stdin>" if name == "-" else name) if name is not None else "the flags"
    if "layers" in body:
        # The master would refuse it too, but naming its field, not the flag.
        given = [flag for flag, attribute in (("--frames", "frames"), ("--chunk", "chunk"),
                 ("a command after --", "command")) if getattr(args, attribute, None)]  # fmt: skip
        if given:
            raise UsageError(
                f"{where} has layers: each gives its own command, frames and chunk, so"
                f" {given[0]} does not go with it"
            )
    for attribute, field in _SCALARS:
        value = getattr(args, attribute, None)
        if value is not None:
            body[field] = value
    if args.command:
        body["command"] = list(args.command)
    for flag, field in (("paused", "paused"), ("preemptible", "preemptible")):
        if getattr(args, flag, False):
            body[field] = True
    requirements = {key: getattr(args, key) for key in ("cpus", "ram_mb", "gpus", "gpu_memory_mb")
                    if getattr(args, key, None) is not None}  # fmt: skip
    if requirements or args.tag:
        merged = _mapping(body, "requirements", where)
        merged.update(requirements)
        if args.tag:
            merged["tags"] = _added(merged, "tags", args.tag, where, "requirements.")
    if args.env:
        _mapping(body, "env", where).update(dict(args.env))
    if args.limits:
        names = [n.strip() for item in args.limits for n in item.split(",") if n.strip()]
        body["limits"] = _added(body, "limits", names, where)
    if args.depends_on:
        body["depends_on"] = _added(body, "depends_on", args.depends_on, where)
    if "title" not in body:
        body["title"] = _title(args, name)
    return body


def _title(args: argparse.Namespace, name: str | None) -> str:
    if args.command:
        return default_title(args.command)
    if name is not None and name != "-":
        stem = os.path.splitext(os.path.basename(name))[0]
        if stem:
            return stem
    return "job"


def _mapping(body: dict[str, Any], field: str, where: str) -> dict[str, Any]:
    value = body.setdefault(field, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {field} must be a mapping for the flags to add to it")
    return value


def _added(
    body: Mapping[str, Any], field: str, more: list[Any], where: str, prefix: str = ""
) -> list[Any]:
    """
    The list C{body[field]} with C{more} after it, each item once.
    """
    value = body.get(field)
    if value is None:
        value = []
    if not isinstance(value, list):
        raise UsageError(f"{where}: {prefix}{field} must be a list for the flags to add to it")
    result = list(value)
    for item in more:
        if item not in result:
            result.append(item)
    return result


def dependency_arg(text: str) -> int | dict[str, Any]:
    """
    C{--depends-on}: C{12} (all of job 12 done first) or C{12:frame} (frame
    by frame).
    """
    number, sep, mode = text.partition(":")
    try:
        job = int(number)
    except ValueError:
        job = 0
    if job < 1 or (sep and mode != "frame"):
        raise argparse.ArgumentTypeError(
            f"must be a job id (12) or a job id and :frame (12:frame), not {text!r}"
        )
    return {"job": job, "mode": "frame"} if sep else job


# -- an OpenJD template ---------------------------------------------------------

#: The flags that do not go with --openjd: the template says what its steps
#: run, over what, with what, needing what; its name is the job's title.
_NOT_WITH_OPENJD = (
    ("--file", "file"),
    ("--title", "title"),
    ("--frames", "frames"),
    ("--chunk", "chunk"),
    ("--cpus", "cpus"),
    ("--ram-mb", "ram_mb"),
    ("--gpus", "gpus"),
    ("--gpu-memory-mb", "gpu_memory_mb"),
    ("--tag", "tag"),
    ("--depends-on", "depends_on"),
    ("--timeout", "timeout"),
    ("--stall-timeout", "stall_timeout"),
    ("--env", "env"),
    ("--cwd", "cwd"),
)


def openjd_job_body(args: argparse.Namespace, stdin: TextIO) -> tuple[dict[str, Any], Path | None]:
    """
    The body to submit for C{--openjd TEMPLATE -p NAME=VALUE ...} and the
    job flags that go with a template, and the directory the template's
    relative paths are from (C{None}: the current one).

    @raise UsageError: a flag that does not go with a template, a C{-p}
        that is not C{NAME=VALUE} or names a parameter twice, a template
        file that cannot be read or is not JSON or YAML.
    """
    from ._openjd import TemplateTextError, _body, read_template, template_text

    given = [flag for flag, attribute in _NOT_WITH_OPENJD if getattr(args, attribute, None)]
    if given:
        raise UsageError(
            f"{given[0]} does not go with --openjd: the template says what its steps run and"
            " need, and its name is the job's title"
        )
    parameters: dict[str, str] = {}
    for item in args.parameter or []:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"-p: {item!r} is not NAME=VALUE")
        if name in parameters:
            raise UsageError(f"-p: the parameter {name} is given twice")
        parameters[name] = value
    try:
        if args.openjd == "-":
            template, directory = template_text(stdin.read(), "<stdin>", None), None
        else:
            template, directory = read_template(Path(args.openjd))
    except OSError as e:
        raise UsageError(f"{args.openjd}: {e.strerror or e}") from None
    except TemplateTextError as e:
        raise UsageError(str(e)) from None
    fields: dict[str, Any] = {
        "priority": args.priority,
        "weight": args.weight,
        "project": args.project,
        "max_retries": args.max_retries,
        "max_running": args.max_running,
        "paused": True if args.paused else None,
        "preemptible": True if args.preemptible else None,
    }
    if args.limits:
        fields["limits"] = [n.strip() for item in args.limits for n in item.split(",") if n.strip()]
    body, _ = _body(template, parameters, fields)
    return body, directory
