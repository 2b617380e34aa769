"""
masterctl: the render farm from a shell, on top of L{masterd_client}.

Exit statuses: 0 success; 1 an error from the master or the network (and,
for C{job --watch} and C{log --follow}, a job or task that finished without
being done); 2 bad arguments; 130 interrupted. Every error is one line on
stderr, C{masterctl: <message>}, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout

from . import _admin, _commands, _farm
from ._accounts import ROLES
from ._client import DEFAULT_URL, Client
from ._context import Context, Runtime, UsageError
from ._version import __version__

__all__ = ["Runtime", "build_parser", "main", "parse", "run"]
from ._errors import MasterdError
from ._http import check_url
from ._jobfile import dependency_arg
from ._output import command_text
from ._webhooks import EVENTS

JOB_STATES = ("waiting", "queued", "running", "paused", "done", "failed", "canceled")
TASK_STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "canceled")
AGENT_STATES = ("idle", "busy", "offline", "disabled")
DELIVERY_STATES = ("pending", "delivered", "failed")
DEFAULT_INTERVAL_S = 2.0

EPILOG = """\
The master is --url, else $MASTERD_URL, else http://127.0.0.1:8080; the
token is --token, else $MASTERD_TOKEN. Global options go before or after the
command. Exit status: 0 ok, 1 an error from the master or the network (or a
watched job or followed task that did not end done), 2 bad arguments.
"""


# -- argument types: a bad value is an argparse error (exit 2) -------------


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    return value


def env_pair(text: str) -> tuple[str, str]:
    """
    C{NAME=VALUE}; the value may hold C{=} and may be empty.
    """
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, not {text!r}")
    return name, value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


# -- the parser -------------------------------------------------------------


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand's copy must not overwrite a value given before
    # the subcommand with its default.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--url", default=argparse.SUPPRESS, help="the master's base URL")
    group.add_argument("--token", default=argparse.SUPPRESS, help="a bearer token")
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the master's JSON (one document) instead of a view for people",
    )
    group.add_argument(
        "--request-timeout",
        type=positive_float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="how long to wait for each answer (default 30)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="masterctl",
        description="Submit, watch and steer the render farm's jobs, tasks and agents;"
        " set its limits and project shares; manage its tokens and webhooks, and read its"
        " audit trail.",
        epilog=EPILOG,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"masterctl {__version__}")
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)

    def command(
        name: str, summary: str, run: Callable[[Context, argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    _submit_options(
        command(
            "submit",
            "submit a job: [--file JOB.yaml] ... [-- COMMAND ARGS...], or --openjd TEMPLATE",
            _commands.submit,
        )
    )

    jobs = command("jobs", "list jobs, newest first", _commands.jobs)
    jobs.add_argument("--state", choices=JOB_STATES)
    jobs.add_argument("--owner", help="the submitting token's name")
    jobs.add_argument("--project", help="this project's jobs")
    jobs.add_argument(
        "--limit", type=non_negative_int, default=50, help="at most this many (0: all; default 50)"
    )

    job = command("job", "show a job, or watch it to its end", _commands.job)
    job.add_argument("job_id", type=positive_int, metavar="JOB_ID", nargs="?")
    job.add_argument(
        "--archived", metavar="FILE", help="show the job of an archive (masterctl archive)"
    )
    _watch_options(job)

    archive = command("archive", "save a finished job as one JSON document", _commands.archive)
    archive.add_argument("job_id", type=positive_int, metavar="JOB_ID")
    archive.add_argument(
        "-o", "--output", metavar="FILE", help="where to write it (default job-ID.json; - stdout)"
    )
    archive.add_argument("--logs", action="store_true", help="with every attempt's log")
    archive.add_argument(
        "--on-master",
        action="store_true",
        help="have the master write it to its retention.archive_dir instead",
    )

    tasks = command("tasks", "list a job's tasks in order", _commands.tasks)
    tasks.add_argument("job_id", type=positive_int, metavar="JOB_ID")
    tasks.add_argument("--state", choices=TASK_STATES)
    tasks.add_argument("--layer", metavar="NAME", help="this layer's tasks only")
    tasks.add_argument(
        "--limit", type=non_negative_int, default=0, help="at most this many (default 0: all)"
    )

    task = command("task", "show a task and its attempts; cancel or retry it", _commands.task)
    task.add_argument("task_id", type=positive_int, metavar="TASK_ID")
    change = task.add_mutually_exclusive_group()
    change.add_argument("--cancel", action="store_true", help="cancel it first")
    change.add_argument("--retry", action="store_true", help="retry it first (failed/canceled)")
    task.add_argument(
        "--done", action="store_true", help="with --retry: a done task too (render it again)"
    )

    log = command("log", "print a task's log, or follow it", _commands.log)
    log.add_argument("task_id", type=positive_int, metavar="TASK_ID")
    log.add_argument("--attempt", type=positive_int, help="this attempt (default: the current)")
    log.add_argument(
        "--after", type=non_negative_int, default=0, help="only lines after this line number"
    )
    log.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the task is finished"
    )
    _interval_option(log)

    for action, summary in [
        ("cancel", "cancel a job's unfinished tasks"),
        ("pause", "hand out no more of a job's tasks"),
        ("resume", "resume a paused job"),
        ("retry", "queue a job's failed and canceled tasks again"),
    ]:
        steer = command(action, summary, _commands.steer)
        steer.set_defaults(action=action)
        steer.add_argument("job_id", type=positive_int, metavar="JOB_ID")
        if action == "pause":
            steer.add_argument(
                "--stop-running",
                action="store_true",
                help="also stop the running tasks and queue them again",
            )

    agents = command("agents", "list agents", _commands.agents)
    agents.add_argument("--state", choices=AGENT_STATES)
    agents.add_argument("--tag")
    agents.add_argument(
        "--limit", type=non_negative_int, default=0, help="at most this many (default 0: all)"
    )

    agent = command("agent", "show an agent; disable or enable it", _commands.agent)
    agent.add_argument("agent_id", metavar="AGENT", help="an agent id, or a hostname")
    switch = agent.add_mutually_exclusive_group()
    switch.add_argument("--disable", action="store_true", help="give it no new tasks")
    switch.add_argument("--enable", action="store_true", help="give it tasks again")
    switch.add_argument(
        "--reset-credential",
        action="store_true",
        help="forget its per-agent secret, so that a reinstalled host enrolls again (admin)",
    )

    command("stats", "the master's counters: requests, exceptions, database", _commands.stats)

    def group(name: str, summary: str) -> Callable[..., argparse.ArgumentParser]:
        parent = commands.add_parser(name, parents=[common], help=summary, description=summary)
        members = parent.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

        def member(
            sub: str, what: str, run: Callable[[Context, argparse.Namespace], int]
        ) -> argparse.ArgumentParser:
            made = members.add_parser(sub, parents=[common], help=what, description=what)
            made.set_defaults(run=run)
            return made

        return member

    _token_commands(group("token", "create, list and revoke tokens (role admin)"))
    audit = command("audit", "the audit trail, oldest first (operator, admin)", _admin.audit)
    _audit_options(audit)
    _webhook_commands(group("webhook", "the URLs told of the farm's events (role admin)"))
    _limit_commands(group("limit", "limits (licences) counted over the whole farm"))
    _project_commands(group("project", "projects' shares of the farm, by weight"))
    return parser


def _limit_commands(member: Callable[..., argparse.ArgumentParser]) -> None:
    member("list", "list limits, with their use", _farm.limit_list)
    show = member("show", "show a limit", _farm.limit_show)
    show.add_argument("name", metavar="NAME")
    put = member("set", "create a limit or change its max (operator)", _farm.limit_set)
    put.add_argument("name", metavar="NAME", help="letters, digits, _ . -")
    put.add_argument(
        "max", type=non_negative_int, metavar="MAX", help="at most this many tasks holding it"
    )
    put.add_argument("--description", metavar="TEXT", help="(default: keep the current one)")
    delete = member("delete", "delete a limit no unfinished job names (operator)",
                    _farm.limit_delete)  # fmt: skip
    delete.add_argument("name", metavar="NAME")


def _project_commands(member: Callable[..., argparse.ArgumentParser]) -> None:
    member("list", "list projects: weights, running and queued tasks", _farm.project_list)
    show = member("show", "show a project", _farm.project_show)
    show.add_argument("name", metavar="NAME")
    put = member("set", "set a project's weight (operator)", _farm.project_set)
    put.add_argument("name", metavar="NAME")
    put.add_argument("weight", type=positive_int, metavar="WEIGHT", help="1-1000 (default 1)")
    delete = member("delete", "forget a project's weight: back to 1 (operator)",
                    _farm.project_delete)  # fmt: skip
    delete.add_argument("name", metavar="NAME")


def _token_commands(member: Callable[..., argparse.ArgumentParser]) -> None:
    create = member("create", "create a token and print its secret, once", _admin.token_create)
    create.add_argument("user", metavar="USER", help="the user name: the owner of its jobs")
    create.add_argument("--role", required=True, metavar="ROLE", help="one of " + ", ".join(ROLES))
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument(
        "--expires",
        metavar="WHEN",
        help="a duration from now (30d, 12h, 1h30m) or an ISO 8601 time with its zone"
        " (2027-01-01T00:00:00Z); default: never",
    )
    create.add_argument("-q", "--quiet", action="store_true", help="print only the secret")

    listing = member("list", "list tokens (never their secrets)", _admin.token_list)
    listing.add_argument("--user", help="this user's only")
    listing.add_argument("--revoked", action="store_true", help="revoked ones too")
    listing.add_argument(
        "--limit", type=non_negative_int, default=0, help="at most this many (default 0: all)"
    )

    show = member("show", "show a token (never its secret)", _admin.token_show)
    show.add_argument("token_id", type=positive_int, metavar="ID")

    revoke = member("revoke", "revoke a token: every master refuses it", _admin.token_revoke)
    revoke.add_argument("token_id", type=positive_int, metavar="ID")


def _audit_options(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("--actor", metavar="USER", help="changes made by this user")
    audit.add_argument(
        "--resource", metavar="HREF", help="changes to this (/api/v1/jobs/12) and what is under it"
    )
    audit.add_argument("--action", help="exact (job.cancel) or a kind (job.*)")
    audit.add_argument(
        "--since", metavar="WHEN", help="a duration back from now (1h, 30m, 2d) or an ISO 8601 time"
    )
    audit.add_argument("--after", type=positive_int, metavar="ID", help="rows after this one")
    audit.add_argument(
        "--limit",
        type=non_negative_int,
        metavar="N",
        default=100,
        help="at most this many (0: all; default 100); not with --follow",
    )
    audit.add_argument(
        "-f", "--follow", action="store_true", help="then print new rows as they come (Ctrl-C ends)"
    )
    audit.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"with --follow, seconds between looks for new rows (default {DEFAULT_INTERVAL_S:g})",
    )


def _webhook_commands(member: Callable[..., argparse.ArgumentParser]) -> None:
    create = member("create", "have the master POST events to a URL", _admin.webhook_create)
    # Not "url": that is the master's (--url).
    create.add_argument("webhook_url", metavar="URL", help="http:// or https://")
    _webhook_fields(create)
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument("--disabled", action="store_true", help="create it disabled")

    member("list", "list webhooks", _admin.webhook_list)

    show = member("show", "show a webhook", _admin.webhook_show)
    show.add_argument("webhook_id", type=positive_int, metavar="ID")

    update = member("update", "change a webhook", _admin.webhook_update)
    update.add_argument("webhook_id", type=positive_int, metavar="ID")
    update.add_argument("--new-url", metavar="URL", help="deliver to this URL from now on")
    _webhook_fields(update, "(replaces its list)")
    update.add_argument("--description", metavar="TEXT")
    switch = update.add_mutually_exclusive_group()
    switch.add_argument("--enable", action="store_true")
    switch.add_argument("--disable", action="store_true", help="deliver it nothing for now")

    delete = member("delete", "delete a webhook", _admin.webhook_delete)
    delete.add_argument("webhook_id", type=positive_int, metavar="ID")

    deliveries = member(
        "deliveries", "a webhook's deliveries: tries, statuses, errors", _admin.webhook_deliveries
    )
    deliveries.add_argument("webhook_id", type=positive_int, metavar="ID")
    deliveries.add_argument("--state", choices=DELIVERY_STATES)
    deliveries.add_argument(
        "--limit", type=non_negative_int, default=50, help="at most this many (0: all; default 50)"
    )


def _webhook_fields(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="EVENT",
        help=f"an event it hears of (repeatable, or comma-separated) {more}: " + ", ".join(EVENTS),
    )
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--secret", help="what signs its deliveries (default: one made up and printed once)"
    )
    secret.add_argument(
        "--secret-env", metavar="VAR", help="the secret is this environment variable's value"
    )


def _submit_options(submit: argparse.ArgumentParser) -> None:
    submit.add_argument(
        "--openjd",
        metavar="TEMPLATE",
        help="an Open Job Description job template (YAML or JSON; - for stdin): its steps are"
        " the job's layers; with -p for its parameters and the job flags --priority, --weight,"
        " --project, --limits, --max-running, --max-retries, --paused, --preemptible",
    )
    submit.add_argument(
        "-p",
        "--parameter",
        action="append",
        metavar="NAME=VALUE",
        help="with --openjd: a job parameter's value (repeatable)",
    )
    submit.add_argument(
        "--file",
        metavar="FILE",
        help="the job as a YAML or JSON file (the body of POST /api/v1/jobs, layers and all;"
        " - for stdin); the flags given override or add to its fields",
    )
    submit.add_argument(
        "--title", help="the job's title (default: its command, else the file's name)"
    )
    submit.add_argument(
        "--frames", help='a frame spec: "1-100", "1-100x5,200,210-215" (required without --file)'
    )
    submit.add_argument("--chunk", type=positive_int, help="frames per task (default 1)")
    submit.add_argument("--priority", type=_int, help="0-100, higher first (default 50)")
    submit.add_argument("--weight", type=positive_int, help="fair-share weight (default 1)")
    needs = submit.add_argument_group("requirements")
    needs.add_argument("--cpus", type=non_negative_int)
    needs.add_argument("--ram-mb", type=non_negative_int, dest="ram_mb", metavar="MB")
    needs.add_argument("--gpus", type=non_negative_int)
    needs.add_argument(
        "--gpu-memory-mb", type=non_negative_int, metavar="MB", help="on each of its gpus"
    )
    needs.add_argument("--tag", action="append", help="a tag the agent must have (repeatable)")
    submit.add_argument(
        "--depends-on",
        type=dependency_arg,
        action="append",
        metavar="JOB_ID[:frame]",
        help="wait until this job is done, or with :frame frame by frame (repeatable)",
    )
    submit.add_argument("--project", help="whose share of the farm it runs in (default: the owner)")
    submit.add_argument(
        "--limits",
        action="append",
        metavar="NAME[,NAME]",
        help="limits (licences) each of its tasks takes (repeatable)",
    )
    submit.add_argument(
        "--max-running", type=positive_int, metavar="N", help="at most N of its tasks at once"
    )
    submit.add_argument(
        "--preemptible",
        action="store_true",
        help="its running tasks may be stopped for a job of much higher priority",
    )
    submit.add_argument("--max-retries", type=non_negative_int)
    submit.add_argument(
        "--timeout", type=positive_int, metavar="SECONDS", help="a running task's time limit"
    )
    submit.add_argument(
        "--stall-timeout",
        type=positive_int,
        metavar="SECONDS",
        help="cancel an attempt that logs nothing for this long",
    )
    submit.add_argument("--paused", action="store_true", help="submit it paused")
    submit.add_argument(
        "--env", type=env_pair, action="append", metavar="NAME=VALUE", help="(repeatable)"
    )
    submit.add_argument("--cwd", help="the command's working directory")
    output = submit.add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true", help="print only the job's id")
    output.add_argument("--watch", action="store_true", help="then watch it to its end")
    _interval_option(submit)


def _watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--watch",
        action="store_true",
        help="show its progress until it is finished; exit 0 if done, 1 otherwise",
    )
    _interval_option(parser)


def _interval_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help=f"seconds between updates (default {DEFAULT_INTERVAL_S:g}); the end is noticed"
        " within 0.5 s whatever this is",
    )


# -- running ------------------------------------------------------------------


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """
    The options, and the job's command: everything after the first C{--},
    taken verbatim (so that the command's own options are never read as
    masterctl's).
    """
    argv = list(argv)
    if "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """
    Parse and complete the arguments; a mistake raises C{SystemExit(2)}
    after argparse's usage message.
    """
    environ = os.environ if environ is None else environ
    options, command = split_command(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(options)
    if extra:
        words = [word for word in extra if not word.startswith("-")]
        if args.subcommand == "submit" and args.openjd is not None and words:
            hint = "; a parameter is -p NAME=VALUE" if "=" in words[0] else ""
            parser.exit(2, f"masterctl: --openjd: {words[0]!r} is not an option{hint}\n")
        if args.subcommand == "submit" and command is None and words:
            # The job's command without its --: argparse would only say
            # "unrecognized arguments", and print its usage.
            example = f"masterctl submit ... -- {command_text(extra)}"
            parser.exit(2, f"masterctl: put the command after --: {example}\n")
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.subcommand == "submit" and args.openjd is not None:
        # The template gives the steps' commands; what does not go with it
        # is said by the submit command, in one line.
        if command is not None:
            parser.exit(2, "masterctl: --openjd: the template's steps give the commands, not --\n")
        args.command = None
    elif args.subcommand == "submit":
        if args.parameter:
            parser.exit(2, "masterctl: -p NAME=VALUE goes with --openjd TEMPLATE\n")
        # A job file may hold the command (or its layers' commands); "--"
        # with nothing after it is a mistake either way.
        if not command and (args.file is None or command is not None):
            parser.error("submit: give the command after --: ... -- render -f {frame} scene")
        if args.file is None and args.frames is None:
            parser.error("the following arguments are required: --frames (or give --file)")
        args.command = command
    elif command is not None:
        parser.error(f"{args.subcommand}: -- and a command go with submit only")
    args.url = getattr(args, "url", None) or environ.get("MASTERD_URL") or DEFAULT_URL
    args.token = getattr(args, "token", None) or environ.get("MASTERD_TOKEN") or None
    args.json = getattr(args, "json", False)
    args.request_timeout = getattr(args, "request_timeout", 30.0)
    try:
        check_url(args.url)
    except ValueError as e:
        parser.error(f"--url: {e}")
    return args


def error_line(error: MasterdError, token: str | None) -> str:
    """
    The one line masterctl prints for an error.
    """
    message = " ".join(error.message.split()) or error.code
    if error.code == "unauthorized" and not token:
        message += " (no token: set MASTERD_TOKEN or pass --token)"
    return f"masterctl: {message}\n"


def run(argv: Sequence[str], runtime: Runtime | None = None) -> int:
    """
    Run masterctl with C{argv} (without the program name) in C{runtime}
    (the real world by default); return the exit status.
    """
    runtime = runtime or Runtime()
    try:
        # argparse prints usage and help itself: to the runtime's streams.
        with redirect_stdout(runtime.out), redirect_stderr(runtime.err):
            args = parse(argv, runtime.environ)
    except SystemExit as exit:
        if exit.code is None:
            return 0
        return exit.code if isinstance(exit.code, int) else 2
    client = Client(args.url, args.token, args.request_timeout, runtime.opener)
    context = Context(runtime, client, args.json)
    try:
        status: int = args.run(context, args)
    except UsageError as error:
        runtime.err.write(f"masterctl: {error}\n")
        return 2
    except MasterdError as error:
        runtime.err.write(error_line(error, args.token))
        return 1
    except KeyboardInterrupt:
        runtime.err.write("\n")
        return 130
    return status


def main(argv: list[str] | None = None) -> int:
    """
    The C{masterctl} console script.
    """
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # The reader went away (masterctl jobs | head): not an error to
        # report, but Python must not complain at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
