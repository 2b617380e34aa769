"""
Retention (issue 17; docs/retention.md), over a real database: ended
attempts' logs compressed and read back the same, logs deleted after
logs_days, finished jobs deleted after jobs_days in bounded batches
(archived first where asked), their agents' job and failure histories kept
with the job's id and title, a job being deleted refusing changes, one
master at a time, and 100,000 tasks deleted while the scheduler assigns.
"""

from __future__ import annotations

from typing import Any

import psycopg2.errors
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from masterd.config import RetentionConfig
from masterd.jobs import lifecycle
from masterd.jobs.retire import beginRetirement, retireTasks
from masterd.retention.service import LOCK_RETRIES, Retention
from masterd.scheduler.claims import claimAll
from masterd.scheduler.service import loadSlotsMany

from .test_talkback import AGENT, Base, update


class RanJobs(Base):
    """
    Jobs run on an agent over talkback, for the tests of what is kept.
    """

    def retention(self, master: str = "test", archiver: Any = None, **config: Any) -> Retention:
        return Retention(
            self.api.pool, RetentionConfig(**config), self.api.events, master, archiver
        )

    async def sql(self, text: str, params: Any = None) -> None:
        await self.api.pool.transaction(lambda txn: txn.execute(text, params))

    async def ranJob(self, frames: str = "1-3", failOne: bool = True) -> tuple[int, list[Any]]:
        """
        A job whose tasks ran on AGENT, each with a log of three lines; the
        first failed (when C{failOne}, for good: no retries), the others
        were done. Its attempts ended at the talkback clock's time: long ago.
        """
        if getattr(self, "_agent", None) is None:
            self._agent = await self.joined()
        connection, transport = self._agent
        job = await self.api.submit(frames=frames, max_retries=0)
        rows = await self.api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        assigned = await self.api.pool.transaction(
            lambda txn: lifecycle.assign(txn, AGENT, [r[0] for r in rows])
        )
        transport.take()
        for i, a in enumerate(assigned):
            await self.say(connection, update(a, "running"))
            lines = [f"line {n} of {a.task_id}" for n in range(3)]
            await self.say(connection, {"type": "log", "task_id": a.task_id,
                                        "attempt": a.attempt, "lines": lines})  # fmt: skip
            if failOne and i == 0:
                await self.say(connection, update(a, "failed", exit_code=3, message="boom"))
            else:
                await self.say(connection, update(a, "done", exit_code=0))
        transport.take()
        return job["id"], assigned

    async def log(self, taskID: int, after: int = 0) -> list[str]:
        reply = await self.api.call("GET", f"/api/v1/tasks/{taskID}/log?after={after}")
        self.assertEqual(reply.code, 200, reply.body)
        return reply.body.decode("utf-8").splitlines()


class RetentionTests(RanJobs):
    async def test_compressLogs(self) -> None:
        """
        An ended attempt's log is compressed into one row and read back the
        same; a second run finds nothing more to do.
        """
        await self.setUpTalkback()
        _, assigned = await self.ranJob(failOne=False)
        before = [await self.log(a.task_id) for a in assigned]
        self.assertEqual(before[0], [f"line {n} of {assigned[0].task_id}" for n in range(3)])
        retention = self.retention()
        self.assertEqual(await retention.compressLogs(), 3)
        self.assertEqual(await self.api.count("task_logs"), 0)
        self.assertEqual(await self.api.count("task_logs_packed"), 3)
        self.assertEqual([await self.log(a.task_id) for a in assigned], before)
        self.assertEqual(await retention.compressLogs(), 0)
        # Read after a line: the rest only.
        self.assertEqual(await self.log(assigned[1].task_id, after=2), before[1][2:])

    async def test_deleteLogs(self) -> None:
        """
        Logs of attempts that ended logs_days ago go, compressed or not; the
        tasks and attempts stay.
        """
        await self.setUpTalkback()
        _, assigned = await self.ranJob()
        retention = self.retention(logs_days=1)
        await retention.compressLogs()
        await self.ranJob(frames="4")
        self.assertGreater(await self.api.count("task_logs"), 0)
        self.assertEqual(await retention.deleteLogs(1), 4)
        self.assertEqual(await self.api.count("task_logs"), 0)
        self.assertEqual(await self.api.count("task_logs_packed"), 0)
        self.assertEqual(await self.log(assigned[0].task_id), [])
        self.assertEqual(await self.api.count("task_attempts"), 4)

    async def test_deleteJob(self) -> None:
        """
        A job finished jobs_days ago is deleted in batches of bounded
        statements, archived first; its agent's job and failure histories
        keep its id and title; a job not yet due stays.
        """
        await self.setUpTalkback()
        jobID, assigned = await self.ranJob(frames="1-7")
        keptID, _ = await self.ranJob(frames="8", failOne=False)
        title = (await self.api.ok("GET", f"/api/v1/jobs/{jobID}"))["title"]
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = %s", (jobID,)
        )
        archived: list[int] = []

        async def archive(job: int) -> None:
            archived.append(job)

        retention = self.retention(jobs_days=2, batch_tasks=2, archiver=archive)
        self.assertEqual(await retention.deleteJobs(2), 1)
        self.assertEqual(archived, [jobID])
        self.assertGreaterEqual(retention.deletedTasks, 7)
        self.assertEqual(retention.deletedJobs, 1)
        reply = await self.api.call("GET", f"/api/v1/jobs/{jobID}")
        self.assertEqual(reply.code, 404)
        self.assertEqual(
            (await self.api.pool.query("SELECT count(*) FROM tasks WHERE job_id = %s", (jobID,)))[
                0
            ][0],
            0,
        )
        await self.api.ok("GET", f"/api/v1/jobs/{keptID}")
        jobs = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/jobs"))["items"]
        byID = {j["job"]["id"]: j for j in jobs}
        self.assertEqual(
            (byID[jobID]["title"], byID[jobID]["deleted"], byID[jobID]["attempts"],
             byID[jobID]["done"], byID[jobID]["failed"]),
            (title, True, 7, 6, 1),
        )  # fmt: skip
        self.assertFalse(byID[keptID]["deleted"])
        [failure] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/failures"))["items"]
        self.assertEqual(
            (failure["job"]["id"], failure["job_title"], failure["task"]["id"], failure["error"]),
            (jobID, title, assigned[0].task_id, "boom"),
        )
        # Paged one at a time, the kept and the live come in one order.
        page = await self.api.ok("GET", f"/api/v1/agents/{AGENT}/jobs?limit=1")
        second = await self.api.ok("GET", page["next"])
        self.assertEqual(
            {page["items"][0]["job"]["id"], second["items"][0]["job"]["id"]}, {jobID, keptID}
        )

    async def test_deleteHistory(self) -> None:
        """
        The farm's hourly history of hours history_days old goes, in
        batches; later hours and the totals stay.
        """
        await self.setUpTalkback()
        for ago in ("10 days", "3 days", "47 hours", "1 hour"):
            for project in ("a", "b", "c"):
                await self.sql(
                    "INSERT INTO farm_history (hour, project, owner, tags, tasks_done)"
                    " VALUES (date_trunc('hour', now() - %s::interval), %s, 'o', '{}', 1)",
                    (ago, project),
                )
        await self.sql(
            "INSERT INTO farm_history_totals (project, tasks_done, tasks_failed, attempts,"
            " cpu_s, wall_s) VALUES ('a', 4, 0, 4, 0, 0)"
        )
        retention = self.retention(history_days=2, batch_tasks=2)
        await retention.run()
        rows = await self.api.pool.query(
            "SELECT now() - hour < interval '49 hours', count(*) FROM farm_history GROUP BY 1"
        )
        self.assertEqual(rows, [(True, 6)])
        rows = await self.api.pool.query("SELECT tasks_done FROM farm_history_totals")
        self.assertEqual(rows, [(4,)])
        self.assertEqual(await retention.deleteHistory(2), 0)

    async def test_byHand(self) -> None:
        """
        A job deleted by hand keeps its agent's histories too.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-2")
        await self.api.ok("DELETE", f"/api/v1/jobs/{jobID}", status=204)
        [kept] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/jobs"))["items"]
        self.assertEqual((kept["job"]["id"], kept["deleted"], kept["failed"]), (jobID, True, 1))
        [failure] = (await self.api.ok("GET", f"/api/v1/agents/{AGENT}/failures"))["items"]
        self.assertEqual(failure["job"]["id"], jobID)

    async def test_archiveFails(self) -> None:
        """
        A job whose archive cannot be written is kept (and tried again).
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1")
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = %s", (jobID,)
        )

        async def archive(job: int) -> None:
            raise OSError("disk full")

        retention = self.retention(jobs_days=2, archiver=archive)
        self.assertFalse(await retention.deleteJob(jobID))
        self.flushLoggedErrors(OSError)
        await self.api.ok("GET", f"/api/v1/jobs/{jobID}")

    async def test_archiveFailsOthersGoOn(self) -> None:
        """
        A job whose archive cannot be written does not hold up the other
        jobs due in the same run.
        """
        await self.setUpTalkback()
        stuck, _ = await self.ranJob(frames="1")
        other, _ = await self.ranJob(frames="2")
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' + id * interval '1 minute'"
        )

        async def archive(job: int) -> None:
            if job == stuck:
                raise OSError("bad file")

        retention = self.retention(jobs_days=2, archiver=archive)
        self.assertEqual(await retention.deleteJobs(2), 1)
        self.flushLoggedErrors(OSError)
        await self.api.ok("GET", f"/api/v1/jobs/{stuck}")
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{other}")).code, 404)

    async def test_deletingRefusesChanges(self) -> None:
        """
        While retention deletes a job, changing it (or one of its tasks) is
        a 409.
        """
        await self.setUpTalkback()
        jobID, assigned = await self.ranJob(frames="1-2")
        await self.sql("UPDATE jobs SET deleting = true WHERE id = %s", (jobID,))
        reply = await self.api.call("POST", f"/api/v1/jobs/{jobID}/retry")
        self.assertEqual(reply.code, 409, reply.body)
        self.assertIn(b"being deleted", reply.body)
        reply = await self.api.call("POST", f"/api/v1/tasks/{assigned[0].task_id}/retry")
        self.assertEqual(reply.code, 409, reply.body)

    async def test_oneMaster(self) -> None:
        """
        The lease lets one master run retention at a time; its holder keeps
        it from run to run.
        """
        await self.setUpTalkback()
        a, b = self.retention("a"), self.retention("b")
        self.assertTrue(await a.lease())
        self.assertFalse(await b.lease())
        self.assertTrue(await a.lease())
        await self.sql(
            "UPDATE retention_marks SET at = now() - interval '1 second' WHERE name = 'lease'"
        )
        self.assertTrue(await b.lease())
        self.assertFalse(await a.lease())

    async def test_bigJobWhileScheduling(self) -> None:
        """
        100,000 tasks of a finished job deleted in batches, every statement
        under max_lock_ms (lock_timeout and statement_timeout), while the
        scheduler keeps assigning another job's tasks to an agent and
        taking its reports.
        """
        await self.setUpTalkback()
        await self.joined()
        big = await self.api.submit(frames="1-100000", paused=True)
        await self.sql(
            "UPDATE tasks SET state = 'done', attempt = 1, finished_at = now() WHERE job_id = %s",
            (big["id"],),
        )
        # Each task with a done attempt on the agent (its usage reported) and
        # a log: what the deletion must fold into the histories, batch by
        # batch, is there.
        await self.sql(
            "INSERT INTO task_attempts (task_id, attempt, job_id, agent_id, state, started_at,"
            " finished_at, exit_code, wall_s, cpu_user_s, cpu_system_s) SELECT id, 1, job_id,"
            " %s, 'done', now() - interval '1 minute', now(), 0, 60, 50, 2 FROM tasks"
            " WHERE job_id = %s",
            (AGENT, big["id"]),
        )
        await self.sql(
            "INSERT INTO task_logs (task_id, attempt, first_line, lines) SELECT id, 1, 0,"
            " ARRAY['Fra:1 | Sample 1/128', 'Saved'] FROM tasks WHERE job_id = %s",
            (big["id"],),
        )
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = %s", (big["id"],)
        )
        self.assertEqual((await self.api.ok("GET", f"/api/v1/jobs/{big['id']}"))["state"], "done")
        work = await self.api.submit(frames="1-100000")
        retention = self.retention(jobs_days=2, max_lock_ms=200, batch_tasks=5000)
        deleting: Deferred[bool] = Deferred.fromCoroutine(retention.deleteJob(big["id"]))
        claimed = 0
        while not deleting.called:
            claimed += await self.claimAndFinish()
            await task.deferLater(reactor, 0, lambda: None)
        self.assertTrue(await deleting)
        self.assertEqual(retention.deletedTasks, 100_000)
        # In batches, each bounded; the scheduler went on meanwhile.
        self.assertGreater(claimed, 0)
        self.assertLessEqual(retention.batch, 5000)
        print(
            f"\n100,000 tasks deleted; longest statement {retention.longestMs:.0f} ms,"
            f" {retention.cutShort} cut short, {claimed} tasks assigned and done meanwhile"
        )
        done = (await self.api.ok("GET", f"/api/v1/jobs/{work['id']}"))["tasks"]["done"]
        self.assertEqual(done, claimed)
        # Every attempt folded once, batch by batch, into the agent's share.
        rows = await self.api.pool.query(
            "SELECT attempts, done, cpu_s FROM agent_job_history WHERE job_id = %s", (big["id"],)
        )
        self.assertEqual(rows, [(100_000, 100_000, 5_200_000.0)])
        rows = await self.api.pool.query(
            "SELECT sum(attempts), sum(cpu_s) FROM farm_history WHERE project = %s",
            (big["project"],),
        )
        self.assertEqual(rows, [(100_000, 5_200_000.0)])

    async def claimAndFinish(self) -> int:
        async def run(txn: Any) -> int:
            [slots] = await loadSlotsMany(txn, [AGENT])
            assert slots is not None
            claims = await claimAll(txn, [slots.capacity()])
            mine = claims.assigned.get(AGENT, [])
            for a in mine:
                await lifecycle.done(txn, AGENT, a.task_id, a.attempt, 0)
            return len(mine)

        found: int = await self.api.pool.transaction(run)
        return found


class ResumeTests(RanJobs):
    async def test_resumedNotArchivedAgain(self) -> None:
        """
        A job whose deletion began (a master killed midway) is finished
        without writing its archive again over the whole one.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-3")
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days', deleting = true"
            " WHERE id = %s",
            (jobID,),
        )
        archived: list[int] = []

        async def archive(job: int) -> None:
            archived.append(job)

        retention = self.retention(jobs_days=2, archiver=archive)
        self.assertTrue(await retention.deleteJob(jobID))
        self.assertEqual(archived, [])
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{jobID}")).code, 404)

    async def test_byHandResumed(self) -> None:
        """
        A deletion by hand that a master left midway (the job C{deleting},
        some of its tasks gone) is finished by retention, even with no
        jobs_days, and counts what was left once; a second DELETE of a job
        whose deletion began finishes it too.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-4")
        otherID, _ = await self.ranJob(frames="5-6")
        events = self.api.events

        async def begin(txn: Any, job: int) -> None:
            await beginRetirement(txn, events, job)
            await retireTasks(txn, events, job, 1)

        for job in (jobID, otherID):
            await self.api.pool.transaction(lambda txn, j=job: begin(txn, j))
        await self.api.ok("DELETE", f"/api/v1/jobs/{otherID}", status=204)
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{otherID}")).code, 404)
        self.assertEqual(await self.retention().deleteJobs(None), 1)
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{jobID}")).code, 404)
        rows = await self.api.pool.query(
            "SELECT job_id, attempts, done, failed FROM agent_job_history ORDER BY job_id"
        )
        self.assertEqual(rows, [(jobID, 4, 3, 1), (otherID, 2, 1, 1)])
        self.assertEqual(await self.api.count("agent_failure_history"), 2)

    async def test_twoDeletionsShare(self) -> None:
        """
        Two deletions of one job at once (retention, and by hand) share its
        tasks: each attempt is counted once, and the job goes.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-9")
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = %s", (jobID,)
        )
        retention = self.retention(jobs_days=2, batch_tasks=1)
        both = [
            Deferred.fromCoroutine(retention.deleteJob(jobID)),
            Deferred.fromCoroutine(self.api.ok("DELETE", f"/api/v1/jobs/{jobID}", status=204)),
        ]
        await gatherResults(both)
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{jobID}")).code, 404)
        rows = await self.api.pool.query("SELECT attempts, done, failed FROM agent_job_history")
        self.assertEqual(rows, [(9, 8, 1)])
        rows = await self.api.pool.query("SELECT sum(attempts) FROM farm_history")
        self.assertEqual(rows, [(9,)])

    async def test_lockHeldElsewhere(self) -> None:
        """
        A deletion whose statement waits on a lock held elsewhere (here the
        roll-up's, as a long periodic step would hold it) gives up after
        max_lock_ms, is tried again a few times, then ends the run with
        nothing changed; the next run deletes the job.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-2")
        await self.sql(
            "UPDATE jobs SET finished_at = now() - interval '3 days' WHERE id = %s", (jobID,)
        )
        holding: Deferred[None] = Deferred()
        release: Deferred[None] = Deferred()

        async def hold(txn: Any) -> None:
            await txn.execute("SELECT pg_advisory_xact_lock(hashtextextended('history', 0))")
            holding.callback(None)
            await release

        held = Deferred.fromCoroutine(self.api.pool.transaction(hold))
        await holding
        retention = self.retention(jobs_days=2, max_lock_ms=20)
        with self.assertRaises(psycopg2.errors.LockNotAvailable):
            await retention.deleteJob(jobID)
        self.assertEqual(retention.cutShort, LOCK_RETRIES + 1)
        rows = await self.api.pool.query("SELECT deleting FROM jobs WHERE id = %s", (jobID,))
        self.assertEqual(rows, [(False,)])
        release.callback(None)
        await held
        self.assertTrue(await retention.deleteJob(jobID))
        self.assertEqual((await self.api.call("GET", f"/api/v1/jobs/{jobID}")).code, 404)


class DutyTests(RanJobs):
    async def test_pauses(self) -> None:
        """
        After each of a deletion's transactions it waits on its clock for
        (1 - duty) / duty of the time that transaction took: with duty 0.25,
        three times as long.
        """
        await self.setUpTalkback()
        jobID, _ = await self.ranJob(frames="1-3")
        clock = Clock()
        ticks = iter(range(10_000))

        def now() -> float:
            # Each reading 10 ms after the last: every transaction "takes"
            # the readings it spans.
            return next(ticks) / 100

        retention = Retention(
            self.api.pool, RetentionConfig(duty=0.25, batch_tasks=2), self.api.events, "test",
            now=now, clock=clock,
        )  # fmt: skip
        deleting = Deferred.fromCoroutine(retention.deleteJob(jobID))
        pauses: list[float] = []
        while not deleting.called:
            await task.deferLater(reactor, 0.001, lambda: None)
            for call in clock.getDelayedCalls():
                pauses.append(round(call.getTime() - clock.seconds(), 6))
                clock.advance(call.getTime() - clock.seconds())
        self.assertTrue(await deleting)
        # begin, two batches (2 tasks, then 1), the empty one, the job.
        self.assertEqual(len(pauses), 5)
        self.assertEqual(set(pauses), {0.09})
