"""
Capabilities and matching (issue 16, part 2): requirements beyond the
minimums (maximums of cpus, RAM and GPUs, os family, CPU architecture,
custom attributes and amounts) through the API, what agents declare in
their hello, the claim over a real database giving a layer's tasks only to
agents that meet every requirement, the SQL and the Python rules agreeing,
preemption, the layer's C{unmet} sentence, and the reference agent's
detection and configuration.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from masterd.agent import capabilities as agentCapabilities
from masterd.agent import tap, usage
from masterd.jobs.capabilities import Extra, Host, Profile, failed, meets, unmet
from masterd.scheduler.claims import claimAll
from masterd.scheduler.preemption import _Free, _Waiting
from masterd.scheduler.service import loadSlotsMany
from masterd.talkback.messages import parseMessage

from .test_talkback import Base, hello

A = "6f1c0000-0000-4000-8000-00000000000a"
B = "6f1c0000-0000-4000-8000-00000000000b"
C = "6f1c0000-0000-4000-8000-00000000000c"

LINUX16 = {"cpus": 16, "ram_mb": 64000, "gpus": 0, "os_family": "linux", "cpu_arch": "x86_64",
           "attributes": {"attr.custom.renderer": ["arnold", "vray"]},
           "amounts": {"amount.custom.scratch": 500}}  # fmt: skip
MAC4 = {"cpus": 4, "ram_mb": 16000, "gpus": 0, "os_family": "macos", "cpu_arch": "arm64",
        "attributes": {"attr.custom.renderer": ["arnold"], "attr.custom.site": ["paris"]},
        "amounts": {"amount.custom.scratch": 50}}  # fmt: skip
WIN8 = {"cpus": 8, "ram_mb": 32000, "gpus": 2, "os_family": "windows", "cpu_arch": "x86_64"}


# -- the rules, in memory ----------------------------------------------------------


def host(**given: Any) -> Host:
    return Host.of(given.get("cpus", 0), given.get("ram_mb", 0), given.get("gpus", 0),
                   given.get("os_family"), given.get("cpu_arch"), given.get("attributes"),
                   given.get("amounts"))  # fmt: skip


class RuleTests(SynchronousTestCase):
    def test_maximums(self) -> None:
        """
        A maximum is held against what the host has in all; a host that did
        not report its cpus or RAM meets no maximum of them.
        """
        sixteen = host(cpus=16, ram_mb=64000, gpus=2)
        self.assertEqual(failed(Extra(max_cpus=1), sixteen), "max_cpus: at most 1 cpus")
        self.assertIsNone(failed(Extra(max_cpus=16, max_ram_mb=64000, max_gpus=2), sixteen))
        self.assertIsNotNone(failed(Extra(max_ram_mb=1000), sixteen))
        self.assertIsNotNone(failed(Extra(max_gpus=1), sixteen))
        self.assertIsNotNone(failed(Extra(max_cpus=100), host()))
        self.assertIsNone(failed(Extra(max_gpus=0), host()))

    def test_osArchAttributesAmounts(self) -> None:
        linux = host(**LINUX16)
        self.assertTrue(meets(Extra(os_family=("linux", "macos"), cpu_arch=("x86_64",)), linux))
        self.assertFalse(meets(Extra(os_family=("windows",)), linux))
        self.assertFalse(meets(Extra(cpu_arch=("arm64",)), linux))
        self.assertFalse(meets(Extra(os_family=("linux",)), host()))
        self.assertTrue(meets(Extra(attributes={"attr.custom.renderer": {"any_of": ["vray", "x"]}}),
                              linux))  # fmt: skip
        self.assertTrue(meets(Extra(attributes={
            "attr.custom.renderer": {"all_of": ["vray", "arnold"]}}), linux))  # fmt: skip
        self.assertFalse(meets(Extra(attributes={
            "attr.custom.renderer": {"all_of": ["vray", "redshift"]}}), linux))  # fmt: skip
        self.assertFalse(meets(Extra(attributes={"attr.custom.site": {"any_of": ["paris"]}}),
                               linux))  # fmt: skip
        self.assertTrue(meets(Extra(amounts={"amount.custom.scratch": {"min": 100, "max": None}}),
                              linux))  # fmt: skip
        self.assertFalse(meets(Extra(amounts={"amount.custom.scratch": {"min": None, "max": 100}}),
                               linux))  # fmt: skip
        self.assertFalse(meets(Extra(amounts={"amount.custom.other": {"min": None, "max": None}}),
                               linux))  # fmt: skip
        self.assertTrue(meets(Extra(), host()))

    def test_unmet(self) -> None:
        """
        The sentence names a requirement no profile meets on its own, or says
        that none meets them all together.
        """

        def profile(**given: Any) -> Profile:
            h = host(**given)
            tags = frozenset(given.get("tags", ()))
            return Profile(h.cpus, h.ram_mb, h.gpus, (0,) * h.gpus, tags, h)

        farm = [profile(**LINUX16), profile(**MAC4)]
        self.assertIsNone(unmet(0, 0, 0, 0, (), Extra(), []))
        self.assertEqual(unmet(1, 0, 0, 0, (), Extra(), []), "no agent is known yet")
        self.assertIsNone(unmet(8, 0, 0, 0, (), Extra(os_family=("linux",)), farm))
        self.assertEqual(unmet(32, 0, 0, 0, (), Extra(), farm),
                         "no known agent meets requirements.cpus (32 cpus)")  # fmt: skip
        self.assertEqual(unmet(0, 0, 0, 0, (), Extra(os_family=("windows",)), farm),
                         "no known agent meets requirements.os_family (windows)")  # fmt: skip
        self.assertEqual(unmet(8, 0, 0, 0, (), Extra(os_family=("macos",)), farm),
                         "no known agent meets all of these requirements together")  # fmt: skip
        self.assertEqual(
            unmet(0, 0, 0, 0, (), Extra(attributes={"attr.custom.site": {"any_of": ["rome"]}}),
                  farm),
            "no known agent meets requirements.attributes.attr.custom.site (any of rome)",
        )  # fmt: skip
        self.assertEqual(unmet(0, 0, 0, 0, ("gpu",), Extra(), farm),
                         "no known agent meets requirements.tags (gpu)")  # fmt: skip

    def test_preemptionFits(self) -> None:
        """
        Preemption places a waiting task only where the claim would.
        """
        free = _Free("a", 1, 16, 64000, 0, frozenset(), (), host(**LINUX16))
        plain = _Waiting(1, 1, 90, 1, 0, 0, 0, frozenset(), 1, ())
        self.assertEqual(free.fits(plain), ())
        small = _Waiting(1, 1, 90, 1, 0, 0, 0, frozenset(), 1, (), Extra(max_cpus=4))
        self.assertIsNone(free.fits(small))
        windows = _Waiting(1, 1, 90, 1, 0, 0, 0, frozenset(), 1, (), Extra(os_family=("windows",)))
        self.assertIsNone(free.fits(windows))


# -- over the API and a real database -----------------------------------------------


class MatchingTests(Base):
    async def agents(self, *specs: tuple[str, dict[str, Any]]) -> None:
        for agentID, info in specs:
            message = self.helloOf(agentID)
            message["agent"].update(info, max_tasks=100, tags=[])
            connection, transport = self.connect()
            await self.say(connection, message)
            self.welcomed(agentID, transport)

    async def claim(self, agentID: str) -> list[int]:
        """
        The job ids of the tasks a claim for the agent's free slots gave it.
        """

        async def run(txn: Any) -> list[Any]:
            [slots] = await loadSlotsMany(txn, [agentID])
            assert slots is not None
            claims = await claimAll(txn, [slots.capacity()])
            return claims.assigned.get(agentID, [])

        assigned = await self.api.pool.transaction(run)
        return sorted({a.job_id for a in assigned})

    async def test_everyRequirement(self) -> None:
        """
        Each job goes only to the agents that meet every one of its
        requirements, minimums and maximums alike.
        """
        api = await self.setUpTalkback()
        await self.agents((A, LINUX16), (B, MAC4), (C, WIN8))
        jobs: dict[str, int] = {}
        for name, requirements in [
            ("any", {}),
            ("max1cpu", {"max_cpus": 1}),
            ("max4cpus", {"max_cpus": 4}),
            ("min8max8", {"cpus": 8, "max_cpus": 8}),
            ("maxram20g", {"max_ram_mb": 20000}),
            ("nogpus", {"max_gpus": 0}),
            ("linuxormac", {"os_family": ["linux", "macos"]}),
            ("arm", {"cpu_arch": ["arm64"]}),
            ("arnold", {"attributes": {"attr.custom.renderer": {"any_of": ["ARNOLD"]}}}),
            ("vrayandarnold", {"attributes": {
                "Attr.Custom.Renderer": {"all_of": ["vray", "arnold"]}}}),
            ("paris", {"attributes": {"attr.custom.site": {"any_of": ["paris", "rome"]}}}),
            ("scratch100", {"amounts": {"amount.custom.scratch": {"min": 100}}}),
            ("scratch10to60", {"amounts": {"amount.custom.scratch": {"min": 10, "max": 60}}}),
            ("scratchdeclared", {"amounts": {"amount.custom.scratch": {}}}),
            ("none", {"os_family": ["windows"], "cpu_arch": ["arm64"]}),
        ]:  # fmt: skip
            jobs[name] = (await api.submit(title=name, frames="1-200",
                                           requirements=requirements))["id"]  # fmt: skip
        names = {v: k for k, v in jobs.items()}
        got = {agent: sorted(names[j] for j in await self.claim(agent)) for agent in (A, B, C)}
        self.assertEqual(
            got[A],
            sorted(
                [
                    "any",
                    "nogpus",
                    "linuxormac",
                    "arnold",
                    "vrayandarnold",
                    "scratch100",
                    "scratchdeclared",
                ]
            ),
        )
        self.assertEqual(
            got[B],
            sorted(
                [
                    "any",
                    "max4cpus",
                    "maxram20g",
                    "nogpus",
                    "linuxormac",
                    "arm",
                    "arnold",
                    "paris",
                    "scratch10to60",
                    "scratchdeclared",
                ]
            ),
        )
        self.assertEqual(got[C], sorted(["any", "min8max8"]))  # fmt: skip
        queued = await api.pool.query(
            "SELECT j.title, count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id"
            " WHERE t.state = 'queued' GROUP BY j.title ORDER BY j.title"
        )
        self.assertEqual([q for q in queued if q[1] == 200], [("max1cpu", 200), ("none", 200)])
        document = await api.ok("GET", f"/api/v1/jobs/{jobs['none']}")
        self.assertEqual(document["layers"][0]["unmet"],
                         "no known agent meets all of these requirements together")  # fmt: skip
        document = await api.ok("GET", f"/api/v1/jobs/{jobs['max1cpu']}")
        self.assertEqual(document["layers"][0]["unmet"],
                         "no known agent meets requirements.max_cpus (at most 1 cpus)")  # fmt: skip
        document = await api.ok("GET", f"/api/v1/jobs/{jobs['any']}")
        self.assertIsNone(document["layers"][0]["unmet"])

    async def test_layersAndPatch(self) -> None:
        """
        A layer's own requirements count for its tasks; a PATCH of the job's
        requirements applies to every layer, is merged, and may make its
        work fit.
        """
        api = await self.setUpTalkback()
        await self.agents((A, LINUX16))
        job = await api.submit(
            title="layers", command=None, frames=None,
            layers=[{"name": "mac", "command": ["x"], "frames": "1-2",
                     "requirements": {"os_family": ["macos"]}},
                    {"name": "any", "command": ["x"], "frames": "1-2"}],
        )  # fmt: skip
        self.assertEqual(len(await self.claim(A)), 1)
        layers = (await api.ok("GET", job["href"]))["layers"]
        self.assertEqual(layers[0]["requirements"]["os_family"], ["macos"])
        self.assertEqual(layers[0]["unmet"], "no known agent meets requirements.os_family (macos)")
        self.assertEqual(layers[1]["requirements"]["os_family"], [])
        patched = await api.ok(
            "PATCH", job["href"], {"requirements": {"os_family": ["linux"], "max_cpus": 32}}
        )
        self.assertEqual(patched["requirements"]["os_family"], ["linux"])
        self.assertEqual(patched["requirements"]["max_cpus"], 32)
        self.assertEqual([la["unmet"] for la in patched["layers"]], [None, None])
        self.assertEqual(await self.claim(A), [job["id"]])
        [[state]] = await api.pool.query(
            "SELECT array_agg(DISTINCT state) FROM tasks WHERE job_id = %s", (job["id"],)
        )
        self.assertEqual(state, ["assigned"])
        reply = await api.call("PATCH", job["href"], {"requirements": {"cpus": 64}})
        self.assertEqual(reply.code, 422, reply.body)
        self.assertEqual(reply.json()["details"]["field"], "requirements.max_cpus")

    async def test_sqlAgreesWithPython(self) -> None:
        """
        The claim's SQL function and the Python rules (preemption, unmet)
        agree, on random hosts and requirements.
        """
        api = await self.setUpTalkback()
        rng = random.Random(16)
        values = ["a", "b", "c"]
        cases: list[tuple[Extra, Host]] = []

        def maybe(value: Any, empty: Any = None) -> Any:
            return value if rng.random() < 0.3 else empty

        for _ in range(400):
            extra = Extra(
                max_cpus=maybe(rng.choice([2, 8, 16])),
                max_ram_mb=maybe(rng.choice([1000, 64000])),
                max_gpus=maybe(rng.choice([0, 1, 4])),
                os_family=maybe(tuple(rng.sample(["linux", "windows", "macos"], 2)), ()),
                cpu_arch=maybe((rng.choice(["x86_64", "arm64"]),), ()),
                attributes=maybe({f"attr.custom.{n}": {rng.choice(["any_of", "all_of"]):
                                                       rng.sample(values, rng.randint(1, 2))}
                                  for n in rng.sample(["x", "y"], rng.randint(1, 2))}, {}),
                amounts=maybe({f"amount.custom.{n}": {"min": rng.choice([None, 1, 5]),
                                                      "max": rng.choice([None, 5, 10])}
                               for n in rng.sample(["p", "q"], rng.randint(1, 2))}, {}),
            )  # fmt: skip
            h = host(
                cpus=rng.choice([0, 2, 8, 32]), ram_mb=rng.choice([0, 1000, 128000]),
                gpus=rng.choice([0, 1, 4]),
                os_family=rng.choice([None, "linux", "windows", "macos"]),
                cpu_arch=rng.choice([None, "x86_64", "arm64"]),
                attributes={f"attr.custom.{n}": rng.sample(values, rng.randint(0, 3))
                            for n in rng.sample(["x", "y"], rng.randint(0, 2))},
                amounts={f"amount.custom.{n}": rng.choice([0, 3, 7, 12])
                         for n in rng.sample(["p", "q"], rng.randint(0, 2))},
            )  # fmt: skip
            cases.append((extra, h))
        rows = await api.pool.query(
            "SELECT masterd_capabilities_met(x.a, x.b, x.c, ARRAY(SELECT jsonb_array_elements_text"
            "(x.d)), ARRAY(SELECT jsonb_array_elements_text(x.e)), x.f, x.g, x.h, x.i, x.j, x.k,"
            " x.l, x.m, x.n) FROM jsonb_to_recordset(%s::jsonb) AS x (a int, b int, c int,"
            " d jsonb, e jsonb, f jsonb, g jsonb, h int, i int, j int, k text, l text, m jsonb,"
            " n jsonb)",
            (json.dumps([{
                "a": e.max_cpus, "b": e.max_ram_mb, "c": e.max_gpus, "d": list(e.os_family),
                "e": list(e.cpu_arch), "f": e.attributes, "g": e.amounts, "h": h.cpus,
                "i": h.ram_mb, "j": h.gpus, "k": h.os_family, "l": h.cpu_arch,
                "m": json.loads(h.attributesJSON()), "n": json.loads(h.amountsJSON()),
            } for e, h in cases]),),
        )  # fmt: skip
        self.assertEqual([r[0] for r in rows], [meets(e, h) for e, h in cases])
        self.assertGreater(sum(1 for r in rows if r[0]), 10)
        self.assertGreater(sum(1 for r in rows if not r[0]), 10)


class RequirementsAPITests(Base):
    async def refused(self, requirements: dict[str, Any], field: str, code: int = 400) -> str:
        body = {"title": "t", "command": ["x"], "frames": "1", "requirements": requirements}
        reply = await self.api.call("POST", "/api/v1/jobs", body)
        self.assertEqual(reply.code, code, (requirements, reply.body))
        error = reply.json()
        self.assertEqual(error["details"]["field"], field, (requirements, error))
        message: str = error["message"]
        return message

    async def test_defaults(self) -> None:
        """
        A job and its layers show every requirement, the new ones at their
        defaults; names and values in lower case.
        """
        api = await self.setUpTalkback()
        job = await api.submit()
        for requirements in (job["requirements"], job["layers"][0]["requirements"]):
            self.assertEqual(
                {k: requirements[k] for k in ("max_cpus", "max_ram_mb", "max_gpus", "os_family",
                                              "cpu_arch", "attributes", "amounts")},
                {"max_cpus": None, "max_ram_mb": None, "max_gpus": None, "os_family": [],
                 "cpu_arch": [], "attributes": {}, "amounts": {}},
            )  # fmt: skip
        self.assertIsNone(job["layers"][0]["unmet"])
        job = await api.submit(requirements={
            "attributes": {"Attr.Custom.Renderer": {"any_of": ["Arnold", "arnold"]}},
            "amounts": {"amount.custom.Licences": {"min": 1, "max": 2.5}},
            "os_family": ["macos", "linux", "macos"]})  # fmt: skip
        self.assertEqual(
            job["requirements"]["attributes"],
            {"attr.custom.renderer": {"any_of": ["arnold"], "all_of": None}},
        )
        self.assertEqual(
            job["layers"][0]["requirements"]["amounts"],
            {"amount.custom.licences": {"min": 1.0, "max": 2.5}},
        )
        self.assertEqual(job["requirements"]["os_family"], ["linux", "macos"])

    async def test_refused(self) -> None:
        await self.setUpTalkback()
        for requirements, field, code in [
            ({"max_cpus": -1}, "requirements.max_cpus", 400),
            ({"max_cpus": "x"}, "requirements.max_cpus", 400),
            ({"cpus": 4, "max_cpus": 2}, "requirements.max_cpus", 422),
            ({"ram_mb": 4, "max_ram_mb": 2}, "requirements.max_ram_mb", 422),
            ({"gpus": 2, "max_gpus": 1}, "requirements.max_gpus", 422),
            ({"os_family": ["beos"]}, "requirements.os_family[0]", 400),
            ({"os_family": "linux"}, "requirements.os_family", 400),
            ({"cpu_arch": ["mips"]}, "requirements.cpu_arch[0]", 400),
            ({"attributes": {"attr.worker.os.family": {"any_of": ["linux"]}}},
             'requirements.attributes["attr.worker.os.family"]', 400),
            ({"attributes": {"amount.custom.x": {"any_of": ["a"]}}},
             'requirements.attributes["amount.custom.x"]', 400),
            ({"attributes": {"attr.custom.x": {}}},
             'requirements.attributes["attr.custom.x"].any_of', 400),
            ({"attributes": {"attr.custom.x": {"any_of": []}}},
             'requirements.attributes["attr.custom.x"].any_of', 400),
            ({"attributes": {"attr.custom.x": {"any_of": ["a b"]}}},
             'requirements.attributes["attr.custom.x"].any_of[0]', 400),
            ({"attributes": {"attr.custom.x": {"none_of": ["a"]}}},
             'requirements.attributes["attr.custom.x"].none_of', 400),
            ({"attributes": {"attr.custom.x": {"all_of": ["a"] * 51}}},
             'requirements.attributes["attr.custom.x"].all_of', 400),
            ({"attributes": {f"attr.custom.x{i}": {"any_of": ["a"]} for i in range(51)}},
             "requirements.attributes", 400),
            ({"attributes": {"attr.custom.x": {"any_of": ["a"]},
                             "attr.custom.X": {"any_of": ["b"]}}},
             "requirements.attributes.attr.custom.X", 422),
            ({"amounts": {"amount.custom.x": {"min": 3, "max": 2}}},
             "requirements.amounts.amount.custom.x.max", 422),
            ({"amounts": {"amount.custom.x": {"min": -1}}},
             'requirements.amounts["amount.custom.x"].min', 400),
            ({"amounts": {"amount.job.x": {"min": 1}}},
             'requirements.amounts["amount.job.x"]', 400),
            ({"amounts": {"amount.custom.x": 3}}, 'requirements.amounts["amount.custom.x"]', 400),
        ]:  # fmt: skip
            await self.refused(requirements, field, code)
        [[count]] = await self.api.pool.query("SELECT count(*) FROM jobs")
        self.assertEqual(count, 0)
        reply = await self.api.call("POST", "/api/v1/jobs", {
            "title": "t", "layers": [{"name": "a", "command": ["x"], "frames": "1",
                                      "requirements": {"cpus": 2, "max_cpus": 1}}]})  # fmt: skip
        self.assertEqual(reply.code, 422)
        self.assertEqual(reply.json()["details"]["field"], "layers[0].requirements.max_cpus")
        job = await self.api.submit()
        reply = await self.api.call("PATCH", job["href"], {"requirements": {"os_family": ["x"]}})
        self.assertEqual((reply.code, reply.json()["details"]["field"]),
                         (400, "requirements.os_family[0]"))  # fmt: skip

    async def test_openAPI(self) -> None:
        """
        The OpenAPI document shows the new requirements, their patterns
        included.
        """
        api = await self.setUpTalkback()
        document = await api.ok("GET", "/api/v1/openapi.json")
        schemas = document["components"]["schemas"]
        properties = schemas["RequirementsModel"]["properties"]
        for name in ("max_cpus", "max_ram_mb", "max_gpus", "os_family", "cpu_arch",
                     "attributes", "amounts"):  # fmt: skip
            self.assertIn(name, properties)
        self.assertIn("propertyNames", properties["attributes"])
        self.assertIn("unmet", schemas["LayerDocument"]["properties"])
        self.assertIn("os_family", schemas["AgentDocument"]["properties"])


# -- hello ---------------------------------------------------------------------------


class HelloTests(Base):
    async def test_stored(self) -> None:
        """
        The hello's os family, architecture, attributes and amounts are
        stored (in lower case) and shown in the agent document.
        """
        await self.setUpTalkback()
        message = self.helloOf(A)
        message["agent"].update(os_family="Linux", cpu_arch="x86_64",
                                attributes={"attr.custom.Renderer": ["Arnold", "vray"]},
                                amounts={"amount.custom.scratch": 12.5})  # fmt: skip
        connection, transport = self.connect()
        await self.say(connection, message)
        self.welcomed(A, transport)
        document = await self.agent(A)
        self.assertEqual(
            (document["os_family"], document["cpu_arch"], document["attributes"],
             document["amounts"]),
            ("linux", "x86_64", {"attr.custom.renderer": ["arnold", "vray"]},
             {"amount.custom.scratch": 12.5}),
        )  # fmt: skip
        plain = await self.joined(B)
        del plain
        document = await self.agent(B)
        self.assertEqual(
            (document["os_family"], document["cpu_arch"], document["attributes"],
             document["amounts"]), (None, None, {}, {}))  # fmt: skip

    async def test_hostile(self) -> None:
        """
        Bad values are refused, naming the field; the connection stays.
        """
        await self.setUpTalkback()
        for change, field in [
            ({"os_family": "li\u0000nux"}, "agent.os_family"),
            ({"os_family": "x" * 33}, "agent.os_family"),
            ({"cpu_arch": "x86 64"}, "agent.cpu_arch"),
            ({"attributes": {"attr.custom.x": ["a"] * 101}}, 'agent.attributes["attr.custom.x"]'),
            ({"attributes": {f"attr.custom.x{i}": ["a"] for i in range(101)}},
             "agent.attributes"),
            ({"attributes": {"attr.custom.x": ["a\u0000"]}},
             'agent.attributes["attr.custom.x"][0]'),
            ({"attributes": {"renderer": ["a"]}}, "agent.attributes.renderer"),
            ({"attributes": {"attr.worker.os.family": ["linux"]}},
             'agent.attributes["attr.worker.os.family"]'),
            ({"attributes": {"attr.custom.x": "a"}}, 'agent.attributes["attr.custom.x"]'),
            ({"amounts": {"amount.custom.x": -1}}, 'agent.amounts["amount.custom.x"]'),
            ({"amounts": {"amount.custom.x": "1"}}, 'agent.amounts["amount.custom.x"]'),
            ({"amounts": {"amount.custom.x": 1e300}}, 'agent.amounts["amount.custom.x"]'),
            ({"amounts": {"amount.custom.x\u0000": 1}}, 'agent.amounts["amount.custom.x\\u0000"]'),
        ]:  # fmt: skip
            message = hello(A)
            message["agent"].update(change)
            connection, transport = self.connect()
            await self.say(connection, message)
            [error] = transport.sent
            self.assertEqual((error["type"], error["field"]), ("error", field), change)
            self.assertIsNone(transport.closed)
            await self.lose(connection)

    def test_parsed(self) -> None:
        message = hello(A)
        message["agent"].update(attributes={"attr.custom.r": ["B", "a", "b"]})
        parsed: Any = parseMessage(json.dumps(message))
        self.assertEqual(parsed.agent.attributes, {"attr.custom.r": ["a", "b"]})


# -- the reference agent --------------------------------------------------------------


class AgentTests(SynchronousTestCase):
    def test_detection(self) -> None:
        for system, family in [("Linux", "linux"), ("Windows", "windows"), ("Darwin", "macos"),
                               ("FreeBSD", "freebsd"), ("", None)]:  # fmt: skip
            self.assertEqual(usage.osFamily(system), family)
        for machine, arch in [("x86_64", "x86_64"), ("AMD64", "x86_64"), ("aarch64", "arm64"),
                              ("arm64", "arm64"), ("ppc64le", "ppc64le"), ("", None)]:  # fmt: skip
            self.assertEqual(usage.cpuArch(machine), arch)
        found = usage.hardware(0, cpus=3, ramMB=1234)
        self.assertEqual((found["cpus"], found["ram_mb"]), (3, 1234))
        self.assertIn(found["os_family"], ("linux", "windows", "macos", "freebsd", "darwin"))
        self.assertIn("cpu_arch", found)
        self.assertNotEqual(usage.hardware(0)["cpus"], 0)

    def settings(self, args: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
        base = ["--master", "ws://a", "--token", "t", "--state-dir", self.mktemp()]
        if config is not None:
            path = Path(self.mktemp())
            path.write_text(json.dumps(config))  # JSON is YAML
            base += ["--config", str(path)]
        options = tap.Options()
        options.parseOptions(base + args)
        result: dict[str, Any] = options["settings"]
        return result

    def test_config(self) -> None:
        """
        The file's cpus, ram-mb, attributes (short names are custom ones,
        one value or a list) and amounts; the command line wins, name by name.
        """
        s = self.settings(
            [],
            {
                "cpus": 8,
                "ram-mb": 16000,
                "attributes": {"renderer": ["Arnold", "vray"], "attr.studio.site": "paris"},
                "amounts": {"licences": 4, "amount.custom.scratch_gb": 500},
            },
        )
        self.assertEqual((s["cpus"], s["ram_mb"]), (8, 16000))
        self.assertEqual(s["attributes"], {"attr.custom.renderer": ("arnold", "vray"),
                                           "attr.studio.site": ("paris",)})  # fmt: skip
        self.assertEqual(s["amounts"], {"amount.custom.licences": 4.0,
                                        "amount.custom.scratch_gb": 500.0})  # fmt: skip
        s = self.settings(["--cpus", "2", "--attribute", "renderer=redshift", "--amount",
                           "licences=1"], {"cpus": 8, "attributes": {"renderer": ["arnold"]},
                                           "amounts": {"licences": 4}})  # fmt: skip
        self.assertEqual(s["cpus"], 2)
        self.assertEqual(s["attributes"], {"attr.custom.renderer": ("redshift",)})
        self.assertEqual(s["amounts"], {"amount.custom.licences": 1.0})
        s = self.settings([])
        self.assertEqual((s["cpus"], s["ram_mb"], s["attributes"], s["amounts"]),
                         (None, None, {}, {}))  # fmt: skip

    def test_badConfig(self) -> None:
        for args, config, problem in [
            (["--cpus", "0"], None, "--cpus: must be at least 1"),
            (["--ram-mb", "lots"], None, "--ram-mb: must be an integer"),
            ([], {"attributes": ["renderer"]}, "attributes: must be a mapping"),
            ([], {"attributes": {"attr.worker.os.family": ["linux"]}}, "is not a custom OpenJD"),
            ([], {"attributes": {"renderer": ["a b"]}}, "is not an OpenJD attribute value"),
            ([], {"amounts": {"licences": -1}}, "amounts: licences: must be between"),
            ([], {"amounts": {"licences": "many"}}, "amounts: licences: must be a number"),
            ([], {"amounts": {"licences": True}}, "amounts: licences: must be a number"),
            (["--attribute", "renderer"], None, "--attribute: 'renderer' is not NAME=VALUE"),
            (["--amount", "x=y"], None, "--amount: x: must be a number"),
        ]:  # fmt: skip
            written: list[str] = []
            self.patch(tap.sys.stderr, "write", written.append)
            with self.assertRaises(SystemExit):
                self.settings(args, config)
            self.assertIn(problem, "".join(written), (args, config))

    def test_fullNames(self) -> None:
        self.assertEqual(agentCapabilities.fullName("Renderer", "attr", "x"),
                         "attr.custom.renderer")  # fmt: skip
        self.assertEqual(agentCapabilities.fullName("deadline:attr.a.b", "attr", "x"),
                         "deadline:attr.a.b")  # fmt: skip
        self.assertRaises(ValueError, agentCapabilities.fullName, "1x", "attr", "x")

    def test_hello(self) -> None:
        """
        The hello carries the declared figures and capabilities.
        """
        from twisted.internet.task import Clock

        from masterd.agent.connection import AgentService, AgentSettings, _Talkback
        from masterd.agent.runner import Runner

        from .test_agent import _FakeTransport

        clock = Clock()
        runner = Runner(clock, Path(self.mktemp()), lambda message: None)
        settings = AgentSettings("id", "t", ("ws://x",), "h", gpus=0, gpu_devices=(), cpus=3,
                                 ram_mb=2048, attributes={"attr.custom.r": ("a",)},
                                 amounts={"amount.custom.n": 2.0})  # fmt: skip
        connection = _Talkback(AgentService(clock, settings, runner))
        transport = _FakeTransport()
        connection.negotiationStarted(transport)  # type: ignore[arg-type]
        connection.negotiationFinished()
        [sent] = transport.take()
        agent = sent["agent"]
        self.assertEqual(
            (agent["cpus"], agent["ram_mb"], agent["attributes"], agent["amounts"]),
            (3, 2048, {"attr.custom.r": ["a"]}, {"amount.custom.n": 2.0}),
        )
        self.assertEqual(agent["os_family"], usage.osFamily())
        self.assertEqual(agent["cpu_arch"], usage.cpuArch())
        # And the master takes it.
        parsed: Any = parseMessage(json.dumps({**sent, "agent": {**agent, "id": A}}))
        self.assertEqual(parsed.agent.amounts, {"amount.custom.n": 2.0})
