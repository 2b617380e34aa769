"""
C{twistd masterd}: command-line options and the service tree of one master.
"""

from __future__ import annotations

import gc
import ipaddress
import resource
import sys
import time
from typing import Any

from attrs import define
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from masterd.accounts import SessionStore, TokenStore
from masterd.audit import AuditLog
from masterd.cluster import MasterRegistry, Notifier
from masterd.config import Config, ConfigError, RetentionConfig, loadConfig
from masterd.db import Batcher, DatabaseService, EmbeddedPostgresService, Pool
from masterd.events import EventBus, TokensChanged
from masterd.history import HistoryMetrics, HistoryService
from masterd.http import Authenticator, HTTPService, MasterAPI, MasterSite
from masterd.http._events import EventsService, EventStreams, JobFeed
from masterd.jobs import JobStore
from masterd.retention.service import Archiver, Retention, RetentionService
from masterd.scheduler import Scheduler, SchedulerSettings
from masterd.scheduler.learning import RequirementLearner
from masterd.scheduler.preemption import PreemptionSettings
from masterd.scheduler.resources import SchedulingStore
from masterd.schema import InputLimits
from masterd.service import MasterReadiness, MasterService
from masterd.stats import MasterStats, StatsService
from masterd.talkback import (
    HELLO_BATCH,
    AgentDirectory,
    AgentRegistry,
    AgentStore,
    TalkbackFactory,
    TalkbackService,
    TalkbackSettings,
)
from masterd.webhooks import Outbox, Sender, WebhookService, httpClient


class Options(usage.Options):
    synopsis = "[-c CONFIG]"
    longdesc = "Run a masterd render farm master. See docs/configuration.md."
    optParameters = [
        ["config", "c", "etc/master.yaml", "The YAML configuration file."],
    ]

    def postOptions(self) -> None:
        try:
            self["parsed"] = loadConfig(self["config"])
        except ConfigError as e:
            # One line a problem, and no traceback: the config is the user's
            # to fix, not ours.
            for line in e.lines:
                sys.stderr.write(f"{line}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None


@define
class Master:
    """
    One master's parts, for whoever wants to look inside (the tests do).
    """

    root: MasterService
    stats: MasterStats
    database: DatabaseService
    http: HTTPService
    api: MasterAPI
    events: EventBus
    jobs: JobStore
    registry: AgentRegistry
    scheduler: Scheduler
    embedded: EmbeddedPostgresService | None


def buildMaster(config: Config, reactor: Any) -> Master:
    """
    The service tree, in dependency order: (embedded PostgreSQL,) database,
    stats, http.
    """
    root = MasterService(reactor)
    stats = MasterStats(now=time.time)

    embedded: EmbeddedPostgresService | None = None
    if config.database.embedded_data_dir is not None:
        embedded = EmbeddedPostgresService(reactor, config.database.embedded_data_dir)
        embedded.setServiceParent(root)

        def dsn() -> str:
            assert embedded is not None and embedded.dsn is not None
            return embedded.dsn

    else:
        configured = config.database.dsn
        assert configured is not None

        def dsn() -> str:
            return configured

    database = DatabaseService(
        reactor, config.database, dsn, onQuery=stats.queries.record,
        # The webhook triggers record which master's transaction made a change.
        settings={"masterd.master": config.master.name},
    )  # fmt: skip
    database.setServiceParent(root)
    StatsService(stats).setServiceParent(root)

    events = EventBus(origin=config.master.name)
    jobs = JobStore(database.pool, events)
    tokens = TokenStore(database.pool, events)
    sessions = SessionStore(database.pool)
    auth = Authenticator(
        config.tokens, tokens.lookup, reactor, cacheSeconds=config.auth_cache_s,
        sessions=sessions.lookup,
    )  # fmt: skip
    events.subscribe(TokensChanged, lambda _: auth.invalidate())
    t = config.talkback
    inputLimits = InputLimits(max_depth=config.limits.max_json_depth)
    batcher = Batcher(database.pool, config.scheduler.max_batch, stats.scheduling)
    agentStore = AgentStore(
        database.pool, batcher, config.scheduler.blocklist_after, events,
        config.limits.max_log_lines_per_attempt, Batcher(database.pool, HELLO_BATCH),
    )  # fmt: skip
    registry = AgentRegistry(config.master.name, agentStore, events, reactor, watcher=stats)
    talkback = TalkbackFactory(
        registry,
        auth,
        TalkbackSettings(
            heartbeat_s=t.heartbeat_s,
            agent_timeout_s=t.agent_timeout_s,
            max_message_bytes=t.max_message_bytes,
            max_errors=t.max_errors,
            inputLimits=inputLimits,
            hello_timeout_s=t.hello_timeout_s,
        ),
        reactor,
    )
    readiness = MasterReadiness(database)
    streams = EventStreams(reactor)
    api = MasterAPI(
        name=config.master.name,
        stats=stats,
        auth=auth,
        database=readiness,
        jobs=jobs,
        agents=AgentDirectory(database.pool, events),
        talkback=talkback,
        publicMetrics=config.http.public_metrics,
        maxFrames=config.limits.max_frames_per_job,
        inputLimits=inputLimits,
        pool=database.pool,
        tokens=tokens,
        auditLog=AuditLog(database.pool),
        scheduling=SchedulingStore(database.pool, events),
        trustedProxies=tuple(ipaddress.ip_network(n) for n in config.http.trusted_proxies),
        sessions=sessions,
        sessionLifetime_s=config.auth_session_s,
        events=events,
        streams=streams,
        archiveDir=config.retention.archive_dir,
        archiveLogs=config.retention.archive_logs,
    )
    site = MasterSite(api.app.resource(), stats, config.limits.max_body_bytes, reactor)
    site.accessLog.enabled = config.http.access_log
    http = HTTPService(reactor, site, config.http.listen)
    http.setServiceParent(root)
    # Stopped before the HTTP service (services stop in reverse order), so
    # that the streams end cleanly.
    EventsService(streams, JobFeed(database.pool, streams), reactor, watcher=stats,
                  expire_s=config.master.expire_s).setServiceParent(root)  # fmt: skip
    TalkbackService(
        registry, reactor, t.flush_s, t.lost_grace_s, t.reap_interval_s, stats
    ).setServiceParent(root)
    s = config.scheduler
    scheduler = Scheduler(
        batcher,
        registry,
        events,
        reactor,
        SchedulerSettings(
            sweep_s=s.sweep_s,
            assign_timeout_s=s.assign_timeout_s,
            blocklist_after=s.blocklist_after,
            preemption=PreemptionSettings(
                enabled=s.preemption.enabled,
                priority_gap=s.preemption.priority_gap,
                min_runtime_s=s.preemption.min_runtime_s,
            ),
        ),
        stats.scheduling,
        stats,
    )
    scheduler.setServiceParent(root)

    def resync() -> None:
        # Hints were missed: tokens may have been revoked meanwhile.
        auth.invalidate()
        scheduler.resync()

    notifier = Notifier(
        reactor, dsn, events, onResync=resync,
        connectTimeout=config.database.connect_timeout_s,
    )  # fmt: skip
    notifier.setServiceParent(root)
    cluster = MasterRegistry(
        database.pool,
        reactor,
        config.master.name,
        config.http.listen,
        api.snapshot,
        config.master.heartbeat_s,
        config.master.expire_s,
        stats,
    )
    api.cluster = cluster
    readiness.cluster = cluster
    database.onReady.append(cluster.beatNow)
    # Back from an outage or a failover: hints may have been missed while
    # the database was away, as while the listening connection was.
    database.onReady.append(resync)
    cluster.setServiceParent(root)
    # The farm's hourly history: every master tries, one at a time rolls up.
    HistoryService(database.pool, reactor, stats).setServiceParent(root)
    api.history = HistoryMetrics(database.pool, reactor)
    RequirementLearner(
        database.pool, config.scheduler.learn_requirements, reactor, stats
    ).setServiceParent(root)
    r = config.retention
    # Always: with nothing to keep or compress it still finishes the
    # deletions by hand that a master left midway.
    RetentionService(
        Retention(database.pool, r, events, config.master.name, _archiver(database.pool, r),
                  clock=reactor),
        r.interval_s, reactor, stats,
    ).setServiceParent(root)  # fmt: skip
    w = config.webhooks
    # Last in the tree, so first to stop: its leases go back while the pool
    # is still open.
    webhooks = WebhookService(
        Outbox(database.pool, config.master.name),
        Sender(httpClient(reactor, w.timeout_s), reactor, w.timeout_s),
        reactor, w, stats,
    )  # fmt: skip
    webhooks.setServiceParent(root)
    api.webhookStats = webhooks.stats
    return Master(root, stats, database, http, api, events, jobs, registry, scheduler, embedded)


def _archiver(pool: Pool, r: RetentionConfig) -> Archiver | None:
    """
    What writes a job's archive before retention deletes it, where
    retention.archive_dir is set.
    """
    directory = r.archive_dir
    if directory is None:
        return None
    from masterd.retention.archive import writeArchive

    async def archive(jobID: int) -> None:
        await writeArchive(pool, jobID, directory, r.archive_logs)

    return archive


def raiseFileLimit() -> int:
    """
    Every agent holds a connection: allow as many open files as the system
    lets this process have.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        return soft
    except (ValueError, OSError):
        return -1


#: Garbage-collector thresholds for the two young generations (Python's
#: defaults are 700 and 10): see tuneGarbageCollector.
GC_THRESHOLDS = (2_000, 100)


def tuneGarbageCollector(reactor: IReactorCore) -> None:
    """
    Make full garbage collections rare. A full collection walks every
    tracked object (about 85 per connected agent: 0.6 s at 10,000 agents)
    and comes once a quarter as many objects as there are have been
    promoted to the oldest generation since the last one. An object is
    promoted when it is alive at a collection of the middle generation:
    with Python's defaults that happens every 7,000 allocations, so anything
    alive for a few milliseconds (a database round trip) is promoted by the
    thousand each second. Collecting the middle generation ten times less
    often, and the youngest a little less often (much less would lengthen
    every young collection, which shows in HTTP latency), promotes only
    objects that live for seconds. The objects of the master's start
    (modules, classes, configuration) are frozen once it runs: they are
    never garbage and no collection needs to walk them again.
    """
    old = gc.get_threshold()[2]
    gc.set_threshold(*GC_THRESHOLDS, old)
    reactor.callWhenRunning(gc.freeze)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    raiseFileLimit()
    tuneGarbageCollector(reactor)
    master = buildMaster(options["parsed"], reactor)
    master.root.registerExitCode()
    return master.root
