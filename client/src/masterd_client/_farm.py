"""
masterctl's commands for what the scheduler shares out: limits (licences)
and projects (shares by weight); and how a job's layers are shown. Like
those of L{_commands}, each returns the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from ._context import Context
from ._output import dump_json, key_values, shell_word, table, time_text
from ._scheduling import limit_href, project_href
from .models import Dependency, Layer, Limit, Project

FRAMES_WIDTH = 30


# -- layers ---------------------------------------------------------------------


def dependency_text(dependency: Dependency) -> str:
    """
    A dependency as C{--depends-on} writes it: C{sim} (all of layer sim),
    C{render:frame} (frame by frame), C{job 12}, C{job 12:frame}; with
    C{(cancel)} when a parent's failure cancels it.
    """
    text = dependency.layer if dependency.layer is not None else f"job {dependency.job}"
    if dependency.frame_by_frame:
        text += ":frame"
    if dependency.on_failure == "cancel":
        text += " (cancel)"
    return text


def shows_layers(layers: list[Layer]) -> bool:
    """
    Whether a job's layers say more than its own fields: not for the one
    C{main} layer of a job submitted as one command.
    """
    return len(layers) > 1 or any(layer.name != "main" for layer in layers)


def layers_table(layers: Iterable[Layer]) -> str:
    return table(
        ["NAME", "STATE", "DONE/TOTAL>", "RUNNING>", "FRAMES", "LIMITS", "DEPENDS ON"],
        [
            [layer.name, layer.state,
             f"{layer.task_counts.done}/{layer.task_counts.total}",
             layer.task_counts.assigned + layer.task_counts.running,
             frames_text_spec(layer.frames, layer.chunk), ",".join(layer.limits),
             ", ".join(dependency_text(d) for d in layer.depends_on)]
            for layer in layers
        ],
    )  # fmt: skip


def frames_text_spec(spec: str, chunk: int) -> str:
    """
    A layer's frames: its spec, and its chunk when above 1 (C{1-100 /5}).
    """
    text = spec if len(spec) <= FRAMES_WIDTH else spec[: FRAMES_WIDTH - 1] + "…"
    return f"{text} /{chunk}" if chunk > 1 else text


# -- limits ---------------------------------------------------------------------


def limit_list(context: Context, args: argparse.Namespace) -> int:
    found = context.client.limits()
    if context.json:
        context.write(dump_json({"items": [limit.raw for limit in found]}))
    elif not found:
        context.note("no limits")
    else:
        context.write(limits_table(found))
    return 0


def limits_table(found: list[Limit]) -> str:
    return table(
        ["NAME", "MAX>", "IN USE>", "DESCRIPTION"],
        [[limit.name, limit.max, limit.in_use, limit.description] for limit in found],
    )


def limit_show(context: Context, args: argparse.Namespace) -> int:
    found = context.client.limit(args.name)
    context.emit(found.raw, lambda: limit_details(found))
    return 0


def limit_details(found: Limit) -> str:
    return f"limit {found.name}\n" + key_values(
        [
            ("max", found.max),
            ("in use", found.in_use),
            ("description", found.description),
            ("created", time_text(found.created_at)),
            ("updated", time_text(found.updated_at)),
        ]
    )


def limit_set(context: Context, args: argparse.Namespace) -> int:
    found = context.client.set_limit(args.name, args.max, description=args.description)
    context.emit(
        found.raw, lambda: f"limit {found.name} set: max {found.max}, {found.in_use} in use\n"
    )
    if found.in_use > found.max:
        # Not an error: the running tasks finish, but the operator should
        # know why nothing new starts.
        context.note(
            f"{found.in_use} tasks hold {found.name}, more than its max: they run on, and"
            f" none starts until fewer than {found.max} hold it"
        )
    return 0


def limit_delete(context: Context, args: argparse.Namespace) -> int:
    context.client.delete_limit(args.name)
    if context.json:
        context.write(dump_json({"deleted": limit_href(args.name)}))
    else:
        context.write(f"limit {args.name} deleted\n")
    return 0


# -- projects -------------------------------------------------------------------


def project_list(context: Context, args: argparse.Namespace) -> int:
    found = context.client.projects()
    if context.json:
        context.write(dump_json({"items": [project.raw for project in found]}))
    elif not found:
        context.note("no projects")
    else:
        context.write(projects_table(found))
    return 0


def projects_table(found: list[Project]) -> str:
    return table(
        ["NAME", "WEIGHT>", "RUNNING>", "QUEUED>", "SINCE"],
        [[p.name, p.weight, p.active, p.queued, time_text(p.created_at) if p.created_at
          else "(default weight)"] for p in found],
    )  # fmt: skip


def project_show(context: Context, args: argparse.Namespace) -> int:
    found = context.client.project(args.name)
    context.emit(found.raw, lambda: project_details(found))
    return 0


def project_details(found: Project) -> str:
    weight = f"{found.weight}" if found.created_at else f"{found.weight} (the default)"
    return f"project {found.name}\n" + key_values(
        [
            ("weight", weight),
            ("running", f"{found.active} tasks (assigned or running)"),
            ("queued", f"{found.queued} tasks"),
            ("jobs", f"masterctl jobs --project {shell_word(found.name)}"),
            ("created", time_text(found.created_at)),
            ("updated", time_text(found.updated_at)),
        ]
    )


def project_set(context: Context, args: argparse.Namespace) -> int:
    found = context.client.set_project(args.name, args.weight)
    context.emit(found.raw, lambda: f"project {found.name} set: weight {found.weight}\n")
    return 0


def project_delete(context: Context, args: argparse.Namespace) -> int:
    context.client.delete_project(args.name)
    if context.json:
        context.write(dump_json({"deleted": project_href(args.name)}))
    else:
        context.write(f"project {args.name}'s weight forgotten: it is 1 again\n")
    return 0
