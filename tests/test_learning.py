"""
Requirements that learn (issue 17; scheduler.learn_requirements,
docs/scheduler.md "Learned requirements"): a layer that declared far more
memory than its attempts used is placed by their 95th percentile once five
reported it; forgotten again by a master that does not learn.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from masterd.jobs import lifecycle
from masterd.scheduler.claims import claimAll
from masterd.scheduler.learning import RequirementLearner, forgetRequirements, learnRequirements
from masterd.scheduler.service import loadSlotsMany

from .test_talkback import AGENT, Base, update
from .test_usage import usage


class LearningTests(Base):
    async def claim(self) -> list[lifecycle.Assignment]:
        async def run(txn: Any) -> list[lifecycle.Assignment]:
            [slots] = await loadSlotsMany(txn, [AGENT])
            assert slots is not None
            return (await claimAll(txn, [slots.capacity()])).assigned.get(AGENT, [])

        return await self.api.pool.transaction(run)

    async def learned(self, jobID: int) -> Any:
        [(mb,)] = await self.api.pool.query(
            "SELECT learned_ram_mb FROM layers WHERE job_id = %s", (jobID,)
        )
        return mb

    async def test_learn(self) -> None:
        """
        Declared 40,000 MB, seen to peak at about 2,000: placed by what was
        seen once five attempts said it, the declaration unchanged.
        """
        await self.setUpTalkback()
        message = self.helloOf(AGENT)
        message["agent"].update(ram_mb=64000, max_tasks=20, cpus=64)
        connection, transport = self.connect()
        await self.say(connection, message)
        self.welcomed(AGENT, transport)
        job = await self.api.submit(frames="1-40", requirements={"ram_mb": 40000})
        # Declared 40,000 MB: one at a time on a 64,000 MB agent.
        [first] = await self.claim()
        transport.take()
        finished = [first]
        await self.say(connection, update(first, "done", exit_code=0,
                                          usage=usage(peak_rss_kb=2000 * 1024)))  # fmt: skip
        self.assertIsNone(await self.learned(job["id"]))
        # Too few attempts reported: nothing learned yet.
        self.assertEqual(await learnRequirements(self.api.pool), 0)
        for i in range(5):
            [a] = await self.claim()
            finished.append(a)
            peak = usage(peak_rss_kb=(1800 + i * 100) * 1024)
            await self.say(connection, update(a, "done", exit_code=0, usage=peak))
        transport.take()
        self.assertEqual(await learnRequirements(self.api.pool), 1)
        learned = await self.learned(job["id"])
        # The 95th percentile of 1,800 to 2,200 MB, rounded up.
        self.assertTrue(2100 <= learned <= 2200, learned)
        # Placed by what was seen: as many as the slots allow.
        self.assertEqual(len(await self.claim()), 20)
        layer = (await self.api.ok("GET", f"/api/v1/jobs/{job['id']}"))["layers"][0]
        self.assertEqual(layer["requirements"]["ram_mb"], 40000)
        self.assertEqual(await forgetRequirements(self.api.pool), 1)
        self.assertIsNone(await self.learned(job["id"]))

    async def test_service(self) -> None:
        """
        The learner runs periodically when on; off, it forgets at start.
        """
        await self.setUpTalkback()
        job = await self.api.submit(frames="1", requirements={"ram_mb": 4000})
        await self.api.pool.transaction(
            lambda txn: txn.execute(
                "UPDATE layers SET learned_ram_mb = 10 WHERE job_id = %s", (job["id"],)
            )
        )
        clock = Clock()
        off = RequirementLearner(self.api.pool, False, clock)
        await off.start()
        self.assertIsNone(await self.learned(job["id"]))
        await off.stop()
        on = RequirementLearner(self.api.pool, True, clock, interval=1.0)
        await on.start()
        clock.advance(1)
        await on.stop()
