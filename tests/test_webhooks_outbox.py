"""
The outbox on a real database: an event row exists if and only if the
change that caused it committed, each kind of event is produced where its
change is made, and nothing is written when no webhook wants the kind.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from masterd.cluster import MasterRegistry
from masterd.db import Pool, Transaction

from ._api import API, startAPI
from ._postgres import freshDatabase

ALL = ["job.done", "job.failed", "job.canceled", "task.failed", "agent.lost",
       "agent.exception", "master.down"]  # fmt: skip


class Boom(Exception):
    pass


async def events(pool: Pool) -> list[tuple[str, dict[str, Any], str]]:
    rows = await pool.query("SELECT kind, body, master FROM webhook_events ORDER BY id")
    return [(k, b, m) for k, b, m in rows]


class OutboxTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api: API = await startAPI(self)
        self.pool = self.api.pool

    async def hook(self, events: list[str], enabled: bool = True) -> int:
        created = await self.api.ok("POST", "/api/v1/webhooks", {
            "url": "http://127.0.0.1:9/hook", "events": events,
            "secret": "sixteen-chars-min", "enabled": enabled,
        }, 201)  # fmt: skip
        return int(created["id"])

    async def agent(self, hostname: str = "node-1") -> str:
        agentID = str(uuid.uuid4())
        await self.pool.query(
            "INSERT INTO agents (id, hostname) VALUES (%s, %s)", (agentID, hostname)
        )
        return agentID

    async def test_nothingWrittenWithoutAWebhook(self) -> None:
        # A webhook that wants other kinds, and a disabled one that wants this.
        await self.hook(["agent.lost"])
        await self.hook(["job.canceled"], enabled=False)
        job = await self.api.submit(frames="1-3")
        await self.api.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
        self.assertEqual(await events(self.pool), [])
        self.assertEqual(await self.api.count("webhook_deliveries"), 0)

    async def test_onlyIfCommitted(self) -> None:
        hookID = await self.hook(["job.canceled", "agent.exception"])
        job = await self.api.submit(frames="1-2")

        async def cancelThenFail(txn: Transaction) -> None:
            await txn.execute("UPDATE tasks SET state = 'canceled' WHERE job_id = %s", (job["id"],))
            rows = await txn.query("SELECT count(*) FROM webhook_events")
            self.assertEqual(rows, [(1,)])  # written in the change's transaction...
            raise Boom()

        with self.assertRaises(Boom):
            await self.pool.transaction(cancelThenFail)
        self.assertEqual(await events(self.pool), [])  # ... and gone with it
        self.assertEqual((await self.api.ok("GET", f"/api/v1/jobs/{job['id']}"))["state"],
                         "queued")  # fmt: skip

        agentID = await self.agent()

        async def exceptionThenFail(txn: Transaction) -> None:
            await txn.execute(
                "INSERT INTO agent_exceptions (agent_id, message) VALUES (%s, 'x')", (agentID,)
            )
            await txn.execute("SELECT masterd_webhook_event('agent.exception', '{}', 'm')")
            raise Boom()

        with self.assertRaises(Boom):
            await self.pool.transaction(exceptionThenFail)
        self.assertEqual(await events(self.pool), [])
        self.assertEqual(await self.api.count("webhook_deliveries"), 0)

        # Committed: the event and one delivery for the webhook.
        await self.api.ok("POST", f"/api/v1/jobs/{job['id']}/cancel")
        (kind, body, _), = await events(self.pool)  # fmt: skip
        self.assertEqual(kind, "job.canceled")
        self.assertEqual(body["job"]["id"], job["id"])
        rows = await self.pool.query("SELECT webhook_id, state, attempts FROM webhook_deliveries")
        self.assertEqual(rows, [(hookID, "pending", 0)])
        self.assertEqual((await self.api.ok("GET", f"/api/v1/webhooks/{hookID}"))["pending"], 1)

    async def test_jobAndTaskEvents(self) -> None:
        await self.hook(ALL)
        done = await self.api.submit(title="done job", frames="1-2")
        failed = await self.api.submit(title="failed job", frames="1-2")
        canceled = await self.api.submit(title="canceled job", frames="1")
        # Task reports change the job's counts many times before it
        # finishes: none of that is an event.
        await self.pool.query(
            "UPDATE tasks SET state = 'running' WHERE job_id IN (%s, %s)",
            (done["id"], failed["id"]),
        )
        self.assertEqual(await events(self.pool), [])
        await self.pool.query("UPDATE tasks SET state = 'done' WHERE job_id = %s", (done["id"],))
        await self.pool.query(
            "UPDATE tasks SET state = 'failed', error = 'segfault', exit_code = 139, attempt = 1"
            " WHERE job_id = %s",
            (failed["id"],),
        )
        await self.api.ok("POST", f"/api/v1/jobs/{canceled['id']}/cancel")
        found = await events(self.pool)
        kinds = ["job.done", "task.failed", "task.failed", "job.failed", "job.canceled"]
        self.assertEqual([k for k, _, _ in found], kinds)
        self.assertEqual(found[0][1], {"job": {
            "id": done["id"], "href": f"/api/v1/jobs/{done['id']}", "title": "done job",
            "owner": "admin", "state": "done",
            "tasks": {"total": 2, "done": 2, "failed": 0, "canceled": 0},
        }})  # fmt: skip
        task = found[1][1]["task"]
        tasks = await self.api.ok("GET", f"/api/v1/jobs/{failed['id']}/tasks")
        first = tasks["items"][0]
        self.assertEqual(task, {
            "id": first["id"], "href": f"/api/v1/tasks/{first['id']}", "index": 0,
            "job": {"id": failed["id"], "href": f"/api/v1/jobs/{failed['id']}"},
            "attempt": 1, "failures": 0, "error": "segfault", "exit_code": 139, "agent": None,
        })  # fmt: skip
        self.assertEqual(found[3][1]["job"]["state"], "failed")
        self.assertEqual(found[4][1]["job"]["title"], "canceled job")
        # Retried and finished again: a second event.
        await self.api.ok("POST", f"/api/v1/jobs/{failed['id']}/retry")
        await self.pool.query("UPDATE tasks SET state = 'done' WHERE job_id = %s", (failed["id"],))
        self.assertEqual((await events(self.pool))[-1][0], "job.done")

    async def test_agentEvents(self) -> None:
        await self.hook(["agent.exception", "agent.lost"])
        agentID = await self.agent("render-07")
        await self.api.registry.store.exception(agentID, "disk full", "Traceback ...")
        (kind, body, _), = await events(self.pool)  # fmt: skip
        agent = {"id": agentID, "href": f"/api/v1/agents/{agentID}", "hostname": "render-07"}
        self.assertEqual((kind, body), ("agent.exception", {
            "agent": agent, "exception": {"message": "disk full", "traceback": "Traceback ..."},
        }))  # fmt: skip

        # An agent gone longer than the lost grace while holding a task.
        job = await self.api.submit(frames="1-2")
        taskID = (await self.api.ok("GET", f"/api/v1/jobs/{job['id']}/tasks"))["items"][0]["id"]
        await self.pool.query(
            "UPDATE tasks SET state = 'running', agent_id = %s, attempt = 1 WHERE id = %s",
            (agentID, taskID),
        )
        await self.pool.query(
            "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state)"
            " VALUES (%s, 1, %s, %s, 'running')",
            (taskID, job["id"], agentID),
        )
        await self.pool.query(
            "UPDATE agents SET session = NULL, disconnected_at = now() - interval '1 hour'"
            " WHERE id = %s",
            (agentID,),
        )
        lost = await self.api.registry.store.reap(time.time() - 60)
        self.assertEqual(lost, [(agentID, taskID, 1)])
        kind, body, _ = (await events(self.pool))[-1]
        self.assertEqual((kind, body), ("agent.lost", {
            "agent": agent,
            "requeued": [{"id": taskID, "href": f"/api/v1/tasks/{taskID}", "attempt": 1}],
        }))  # fmt: skip
        # Requeued once: the next sweep finds nothing and says nothing.
        self.assertEqual(await self.api.registry.store.reap(time.time()), [])
        self.assertEqual(len(await events(self.pool)), 2)

        # An idle agent gone past the grace is lost too: said once for this
        # disconnection, again for a later one.
        idle = await self.agent("render-08")
        await self.pool.query(
            "UPDATE agents SET session = NULL, disconnected_at = now() - interval '1 hour'"
            " WHERE id = %s RETURNING id",
            (idle,),
        )
        self.assertEqual(await self.api.registry.store.reap(time.time() - 60), [])
        kind, body, _ = (await events(self.pool))[-1]
        self.assertEqual((kind, body), ("agent.lost", {
            "agent": {"id": idle, "href": f"/api/v1/agents/{idle}", "hostname": "render-08"},
            "requeued": [],
        }))  # fmt: skip
        await self.api.registry.store.reap(time.time())
        self.assertEqual(len(await events(self.pool)), 3)
        await self.pool.query(
            "UPDATE agents SET disconnected_at = now() - interval '30 minutes'"
            " WHERE id = %s RETURNING id",
            (idle,),
        )
        await self.api.registry.store.reap(time.time() - 60)
        self.assertEqual([k for k, _, _ in await events(self.pool)].count("agent.lost"), 3)

    async def test_masterDown(self) -> None:
        await self.hook(["master.down"])
        await self.pool.query(
            "INSERT INTO masters (name, version, last_seen) VALUES"
            " ('gone', '0', now() - interval '1 hour'), ('alive', '0', now())"
        )
        registry = MasterRegistry(self.pool, reactor, "watcher", (), dict, 10.0, 60.0)
        await registry.expire()
        await registry.expire()  # said once per death
        (kind, body, master), = await events(self.pool)  # fmt: skip
        self.assertEqual((kind, master), ("master.down", "watcher"))
        self.assertEqual(body["master"]["name"], "gone")
        self.assertEqual(body["master"]["href"], "/api/v1/masters/gone")
        self.assertTrue(body["master"]["last_seen"].endswith("Z"))
        # It comes back (heartbeats), then dies again: a second event, once
        # its last heartbeat is older than master.expire_s (0 here).
        await self.pool.query("UPDATE masters SET last_seen = now() WHERE name = 'gone'")
        await registry.expire()
        self.assertEqual(len(await events(self.pool)), 1)
        impatient = MasterRegistry(self.pool, reactor, "watcher", (), dict, 10.0, 0.0)
        await impatient.expire()
        await impatient.expire()
        named = [b["master"]["name"] for _, b, _ in await events(self.pool)]
        self.assertEqual(sorted(named), ["alive", "gone", "gone"])


class MasterSettingTests(TestCase):
    async def test_triggersKnowTheMaster(self) -> None:
        """
        Each master's pool names it in a session setting, which the events
        written by the triggers record.
        """
        dsn = await freshDatabase(self)
        pool = Pool(reactor, dsn, minSize=1, maxSize=1, settings={"masterd.master": "m-1.x"})
        await pool.open()
        self.addCleanup(pool.close)
        await pool.query(
            "INSERT INTO webhooks (url, events, secret, created_by)"
            " VALUES ('http://x', '{master.down}', 'sixteen-chars-min', 't')"
        )
        await pool.query("SELECT masterd_webhook_event('master.down', '{}')")
        await pool.query("SELECT masterd_webhook_event('master.down', '{}', 'explicit')")
        self.assertEqual([m for _, _, m in await events(pool)], ["m-1.x", "explicit"])
