"""
Load and validate a master's YAML configuration file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

import yaml
from twisted.internet import endpoints

from ._model import (
    Config,
    DatabaseConfig,
    HTTPConfig,
    LimitsConfig,
    MasterConfig,
    PoolConfig,
    PreemptionConfig,
    RetentionConfig,
    Role,
    SchedulerConfig,
    TalkbackConfig,
    TokenConfig,
    WebhooksConfig,
)
from ._reader import Problems, Section

#: Environment variables that may carry secrets instead of the file.
DSN_ENV = "MASTERD_DATABASE_DSN"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class ConfigError(Exception):
    """
    The configuration file is unusable; C{lines} says why, one problem a line.
    """

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def loadConfig(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """
    Read, parse and validate the file at C{path}.

    @raise ConfigError: with every problem found, each as
        C{<file>: <dotted.key>: <what is wrong>}.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: is not UTF-8 text"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}: "
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError([f"{source}: {where}{problem}"]) from None
    base = Path(path).resolve().parent
    return parseConfig(raw, source=source, base=base, environ=environ)


def parseConfig(
    raw: object,
    *,
    source: str = "<config>",
    base: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """
    Validate an already parsed YAML document.
    """
    env = os.environ if environ is None else environ
    if raw is not None and not isinstance(raw, Mapping):
        Section("", raw, problems := Problems())
        raise ConfigError([f"{source}: {key}: {message}" for key, message in problems.items])
    problems = Problems()
    top = Section("", raw, problems)
    master = _master(top.section("master"))
    http = _http(top.section("http"))
    database = _database(top.section("database"), base or Path.cwd(), env)
    auth = top.section("auth")
    cacheS = auth.number("cache_s", 5.0, positive=True, maximum=10.0)
    sessionHours = auth.number("session_hours", 12.0, positive=True, maximum=720.0)
    tokens = _tokens(auth, env)
    limits = _limits(top.section("limits"))
    talkback = _talkback(top.section("talkback"))
    scheduler = _scheduler(top.section("scheduler"))
    webhooks = _webhooks(top.section("webhooks"))
    retention = _retention(top.section("retention"), base or Path.cwd())
    top.finish()
    if problems:
        raise ConfigError([f"{source}: {key}: {message}" for key, message in problems.items])
    return Config(
        source=source,
        master=master,
        http=http,
        database=database,
        tokens=tokens,
        limits=limits,
        talkback=talkback,
        scheduler=scheduler,
        webhooks=webhooks,
        retention=retention,
        auth_cache_s=cacheS,
        auth_session_s=sessionHours * 3600.0,
    )


#: The longest retention.*_days: a century (beyond it a number of seconds
#: stops being one PostgreSQL can read).
MAX_DAYS = 36_500


def _retention(s: Section, base: Path) -> RetentionConfig:
    d = RetentionConfig()
    logs = s.number("logs_days", None, positive=True, maximum=MAX_DAYS)
    jobs = s.number("jobs_days", None, positive=True, maximum=MAX_DAYS)
    history = s.number("history_days", None, positive=True, maximum=MAX_DAYS)
    archive = s.string("archive_dir", None)
    archiveLogs = s.boolean("archive_logs", d.archive_logs)
    compress = s.boolean("compress_logs", d.compress_logs)
    interval = s.number("interval_s", d.interval_s, positive=True)
    lock = s.integer("max_lock_ms", d.max_lock_ms, minimum=10, maximum=60_000)
    batch = s.integer("batch_tasks", d.batch_tasks, minimum=1, maximum=100_000)
    duty = s.number("duty", d.duty, minimum=0.05, maximum=1)
    s.finish()
    return RetentionConfig(
        logs_days=None if logs is None else float(logs),
        jobs_days=None if jobs is None else float(jobs),
        history_days=None if history is None else float(history),
        archive_dir=None if not archive else Path(os.path.normpath(base / archive)),
        archive_logs=archiveLogs,
        compress_logs=compress,
        interval_s=float(interval),
        max_lock_ms=lock,
        batch_tasks=batch,
        duty=float(duty),
    )


def _webhooks(s: Section) -> WebhooksConfig:
    d = WebhooksConfig()
    retry = s.number("retry_for_s", d.retry_for_s, positive=True)
    timeout = s.number("timeout_s", d.timeout_s, positive=True, maximum=300.0)
    concurrency = s.integer("concurrency", d.concurrency, minimum=1, maximum=64)
    backoff = s.number("max_backoff_s", d.max_backoff_s, positive=True)
    poll = s.number("poll_s", d.poll_s, positive=True)
    s.finish()
    return WebhooksConfig(
        retry_for_s=retry,
        timeout_s=timeout,
        concurrency=concurrency,
        max_backoff_s=backoff,
        poll_s=poll,
    )


def _scheduler(s: Section) -> SchedulerConfig:
    d = SchedulerConfig()
    sweep = s.number("sweep_s", d.sweep_s, positive=True)
    assign = s.number("assign_timeout_s", d.assign_timeout_s, positive=True)
    blocklist = s.integer("blocklist_after", d.blocklist_after, minimum=0)
    batch = s.integer("max_batch", d.max_batch, minimum=1, maximum=100_000)
    preemption = _preemption(s.section("preemption"))
    learn = s.boolean("learn_requirements", d.learn_requirements)
    s.finish()
    return SchedulerConfig(
        sweep_s=sweep, assign_timeout_s=assign, blocklist_after=blocklist, max_batch=batch,
        preemption=preemption, learn_requirements=learn,
    )  # fmt: skip


def _preemption(s: Section) -> PreemptionConfig:
    d = PreemptionConfig()
    enabled = s.boolean("enabled", d.enabled)
    gap = s.integer("priority_gap", d.priority_gap, minimum=1, maximum=100)
    runtime = s.number("min_runtime_s", d.min_runtime_s, minimum=0.0)
    s.finish()
    return PreemptionConfig(enabled=enabled, priority_gap=gap, min_runtime_s=runtime)


def _talkback(s: Section) -> TalkbackConfig:
    d = TalkbackConfig()
    heartbeat = s.number("heartbeat_s", d.heartbeat_s, positive=True)
    timeout = s.number("agent_timeout_s", d.agent_timeout_s, positive=True)
    if isinstance(heartbeat, float) and isinstance(timeout, float) and timeout <= heartbeat:
        s.problems.add(
            s.key("agent_timeout_s"),
            f"must be longer than talkback.heartbeat_s ({heartbeat:g}), not {timeout:g}",
        )
    grace = s.number("lost_grace_s", timeout if isinstance(timeout, float) else None,
                     minimum=0.0)  # fmt: skip
    size = s.integer("max_message_bytes", d.max_message_bytes, minimum=1024, maximum=64 << 20)
    errors = s.integer("max_errors", d.max_errors, minimum=0)
    flush = s.number("flush_s", d.flush_s, positive=True)
    reap = s.number("reap_interval_s", d.reap_interval_s, positive=True)
    hello = s.number("hello_timeout_s", d.hello_timeout_s, positive=True)
    s.finish()
    return TalkbackConfig(
        heartbeat_s=heartbeat,
        agent_timeout_s=timeout,
        lost_grace_s=grace,
        max_message_bytes=size,
        max_errors=errors,
        flush_s=flush,
        reap_interval_s=reap,
        hello_timeout_s=hello,
    )


def _master(s: Section) -> MasterConfig:
    name = s.string("name", socket.gethostname() or "master")
    if s.has("name") and isinstance(name, str) and name and not _NAME.match(name):
        s.problems.add(
            s.key("name"),
            "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    heartbeat = s.number("heartbeat_s", 10.0, positive=True)
    expire = s.number("expire_s", 60.0, positive=True)
    if isinstance(heartbeat, float) and isinstance(expire, float) and expire <= heartbeat:
        s.problems.add(s.key("expire_s"), f"must be longer than master.heartbeat_s ({heartbeat:g})")
    s.finish()
    return MasterConfig(name=name, heartbeat_s=heartbeat, expire_s=expire)


class _ParseOnlyReactor:
    """
    Endpoint strings are parsed against no reactor at all: validation must not
    listen on anything.
    """


def _checkEndpoint(description: str) -> str | None:
    try:
        endpoints.serverFromString(_ParseOnlyReactor(), description)
    except (ValueError, KeyError, TypeError) as e:
        return str(e) or type(e).__name__
    except Exception as e:  # TLS files that do not load, for example
        return str(e) or type(e).__name__
    return None


def _http(s: Section) -> HTTPConfig:
    listen = s.items("listen", list(HTTPConfig().listen))
    checked: list[str] = []
    if isinstance(listen, list):
        if not listen:
            s.problems.add(s.key("listen"), "must name at least one endpoint")
        for index, item in enumerate(listen):
            key = f"{s.key('listen')}[{index}]"
            if not isinstance(item, str) or not item:
                s.problems.add(key, "must be a Twisted server endpoint string")
                continue
            error = _checkEndpoint(item)
            if error is not None:
                s.problems.add(key, f"is not a valid endpoint ({error})")
                continue
            checked.append(item)
    public = s.boolean("public_metrics", False)
    accessLog = s.boolean("access_log", True)
    proxies = s.items("trusted_proxies", [])
    trusted: list[str] = []
    for index, item in enumerate(proxies if isinstance(proxies, list) else []):
        try:
            trusted.append(str(ipaddress.ip_network(item, strict=False)))
        except (ValueError, TypeError):
            s.problems.add(
                f"{s.key('trusted_proxies')}[{index}]",
                f"must be an IP address or network (10.0.0.0/8), not {str(item)[:60]!r}",
            )
    s.finish()
    return HTTPConfig(
        listen=tuple(checked),
        public_metrics=public,
        access_log=accessLog,
        trusted_proxies=tuple(trusted),
    )


def _database(s: Section, base: Path, env: Mapping[str, str]) -> DatabaseConfig:
    embedded = s.section("embedded")
    dataDir = embedded.string("data_dir") if s.has("embedded") else None
    embedded.finish()
    dsn = s.string("dsn", None)
    if env.get(DSN_ENV):
        dsn = env[DSN_ENV]
    if (dataDir is None) == (dsn is None):
        which = "both are given" if dsn is not None else "neither is given"
        s.problems.add(
            s.path,
            f"needs exactly one of database.embedded.data_dir and database.dsn "
            f"(or ${DSN_ENV}): {which}",
        )
    pool = s.section("pool")
    poolMin = pool.integer("min", PoolConfig().min, minimum=1, maximum=1000)
    poolMax = pool.integer("max", PoolConfig().max, minimum=1, maximum=1000)
    acquire = pool.number("acquire_timeout_s", PoolConfig().acquire_timeout_s, positive=True)
    if isinstance(poolMin, int) and isinstance(poolMax, int) and poolMax < poolMin:
        pool.problems.add(pool.key("max"), f"must be at least pool.min ({poolMin}), not {poolMax}")
    pool.finish()
    connect = s.number("connect_timeout_s", 5.0, positive=True)
    statement = s.number("statement_timeout_s", 30.0, positive=True)
    reconnect = s.number("reconnect_max_s", 10.0, positive=True)
    s.finish()
    return DatabaseConfig(
        embedded_data_dir=Path(os.path.normpath(base / dataDir))
        if isinstance(dataDir, str) and dataDir
        else None,
        dsn=dsn,
        pool=PoolConfig(min=poolMin, max=poolMax, acquire_timeout_s=acquire),
        connect_timeout_s=connect,
        statement_timeout_s=statement,
        reconnect_max_s=reconnect,
    )


def _tokens(s: Section, env: Mapping[str, str]) -> tuple[TokenConfig, ...]:
    raw = s.items("tokens", [])
    s.finish()
    tokens: list[TokenConfig] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        t = Section(f"{s.key('tokens')}[{index}]", item, s.problems)
        name = t.string("name")
        roleName = t.string("role")
        role = None
        if isinstance(roleName, str) and roleName:
            try:
                role = Role(roleName)
            except ValueError:
                t.problems.add(
                    t.key("role"),
                    f"must be one of {', '.join(r.value for r in Role)}, not {roleName!r}",
                )
        given = [k for k in ("token", "token_sha256", "token_env") if t.has(k)]
        digest = None
        if len(given) != 1:
            t.problems.add(
                t.path,
                "needs exactly one of token, token_sha256 and token_env"
                + (f" (has {', '.join(given)})" if given else ""),
            )
            for k in given:
                t.raw(k)
        elif given[0] == "token":
            secret = t.string("token")
            if isinstance(secret, str) and secret:
                digest = _tokenDigest(t, "token", secret)
        elif given[0] == "token_sha256":
            hexed = t.string("token_sha256")
            if isinstance(hexed, str) and _SHA256.match(hexed):
                digest = bytes.fromhex(hexed)
            elif isinstance(hexed, str):
                t.problems.add(t.key("token_sha256"), "must be 64 hexadecimal digits")
        else:
            variable = t.string("token_env")
            if isinstance(variable, str) and variable:
                secret = env.get(variable, "")
                if not secret:
                    t.problems.add(
                        t.key("token_env"), f"environment variable {variable} is not set"
                    )
                else:
                    digest = _tokenDigest(t, "token_env", secret)
        t.finish()
        if isinstance(name, str) and name in names:
            t.problems.add(t.key("name"), f"{name!r} is used by another token")
        if digest is not None and digest in digests:
            t.problems.add(t.path, "has the same token as another entry")
        if isinstance(name, str) and name and role is not None and digest is not None:
            names.add(name)
            digests.add(digest)
            tokens.append(TokenConfig(name=name, role=role, sha256=digest))
    return tuple(tokens)


def _tokenDigest(t: Section, key: str, secret: str) -> bytes | None:
    if len(secret) < 16:
        t.problems.add(t.key(key), "must be at least 16 characters long")
        return None
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _limits(s: Section) -> LimitsConfig:
    body = s.integer("max_body_bytes", LimitsConfig().max_body_bytes, minimum=1024)
    frames = s.integer(
        "max_frames_per_job", LimitsConfig().max_frames_per_job, minimum=1, maximum=100_000_000
    )
    logLines = s.integer(
        "max_log_lines_per_attempt", LimitsConfig().max_log_lines_per_attempt,
        minimum=100, maximum=2**31 - 1,
    )  # fmt: skip
    depth = s.integer("max_json_depth", LimitsConfig().max_json_depth, minimum=4, maximum=200)
    s.finish()
    return LimitsConfig(
        max_body_bytes=body,
        max_frames_per_job=frames,
        max_log_lines_per_attempt=logLines,
        max_json_depth=depth,
    )
