"""
GET /api/v1/jobs for the dashboard's jobs table: search (q), sort, offset
and total, against a real database.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from masterd.client import Client

from ._api import API, TOKENS, startAPI

SORTS = ("-id", "id", "priority", "-priority", "title", "-title", "state", "-state", "owner",
         "-owner", "updated", "-updated")  # fmt: skip


class Base(TestCase):
    timeout = 120

    async def api(self, **kw: Any) -> API:
        return await startAPI(self, **kw)

    async def submitAs(self, api: API, role: str, **body: Any) -> dict[str, Any]:
        body.setdefault("title", "a job")
        body.setdefault("command", ["render", "{frame}"])
        body.setdefault("frames", "1-2")
        reply = await api.call("POST", "/api/v1/jobs", body, role=role)
        self.assertEqual(reply.code, 201, reply.body)
        result: dict[str, Any] = reply.json()
        return result

    async def pages(self, api: API, path: str) -> tuple[list[int], list[str], list[int]]:
        """
        Every page from C{path} on, following next: the ids in order, the
        next hrefs, and the total each page said.
        """
        ids: list[int] = []
        hrefs: list[str] = []
        totals: list[int] = []
        page = await api.ok("GET", path)
        while True:
            ids += [j["id"] for j in page["items"]]
            totals.append(page["total"])
            if page["next"] is None:
                return ids, hrefs, totals
            hrefs.append(page["next"])
            self.assertLess(len(hrefs), 100, hrefs)
            page = await api.ok("GET", page["next"])

    async def error(self, api: API, path: str, status: int = 400) -> dict[str, Any]:
        reply = await api.call("GET", path)
        self.assertEqual(reply.code, status, (path, reply.body))
        error: dict[str, Any] = reply.json()
        self.assertEqual(error["error"], "invalid_field", error)
        return error


def query(href: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(href).query, keep_blank_values=True)


class SearchTests(Base):
    TITLES = ("Shot 10 comp", "shot_10 lighting", "100% done", "plain", "back\\slash",
              "SHOT 7", "Été")  # fmt: skip

    async def test_search(self) -> None:
        """
        q is a case-insensitive substring of the title; %, _ and \\ in it
        match only themselves.
        """
        api = await self.api()
        jobs = {(await api.submit(title=t))["id"]: t for t in self.TITLES}
        for q, titles in [
            ("shot", {"Shot 10 comp", "shot_10 lighting", "SHOT 7"}),
            ("SHOT 1", {"Shot 10 comp"}),
            ("t_1", {"shot_10 lighting"}),
            ("%", {"100% done"}),
            ("0%", {"100% done"}),
            ("%d", set()),
            ("_", {"shot_10 lighting"}),
            ("\\", {"back\\slash"}),
            ("\\s", {"back\\slash"}),
            ("ain", {"plain"}),
            ("Été", {"Été"}),
            ("éTÉ", {"Été"}),
            ("nothing like it", set()),
            ("", set(self.TITLES)),
        ]:
            page = await api.ok("GET", "/api/v1/jobs?" + urlencode({"q": q}))
            found = {j["title"] for j in page["items"]}
            self.assertEqual(found, titles, q)
            self.assertEqual(page["total"], len(titles), q)
            ids = [j["id"] for j in page["items"]]
            self.assertEqual(ids, sorted(ids, reverse=True), q)
        self.assertEqual(len(jobs), len(self.TITLES))

    async def test_digits(self) -> None:
        """
        q of digits only is also the job with that id (leading zeros and
        all); digits too large for an id match titles only.
        """
        api = await self.api()
        ids = [(await api.submit(title=f"take {n}"))["id"] for n in (3, 30, 12)]
        titles = {i: f"take {n}" for i, n in zip(ids, (3, 30, 12), strict=True)}
        for q in ("1", "2", "3", "01", str(ids[2]), "30"):
            expected = {i for i, t in titles.items() if q in t or i == int(q)}
            page = await api.ok("GET", f"/api/v1/jobs?q={q}")
            self.assertEqual({j["id"] for j in page["items"]}, expected, q)
            self.assertEqual(page["total"], len(expected), q)
        for q in ("99999999999999999999", "9223372036854775808", "9" * 255):
            page = await api.ok("GET", f"/api/v1/jobs?q={q}")
            self.assertEqual((page["items"], page["total"]), ([], 0), q)
        # Unicode digits are no id.
        page = await api.ok("GET", "/api/v1/jobs?q=%D9%A1")
        self.assertEqual(page["total"], 0)

    async def test_withFilters(self) -> None:
        api = await self.api()
        a = await self.submitAs(api, "user", title="comp A", paused=True)
        await self.submitAs(api, "user", title="comp B")
        await self.submitAs(api, "operator", title="comp C", paused=True)
        await self.submitAs(api, "operator", title="light D", paused=True)
        page = await api.ok("GET", "/api/v1/jobs?q=COMP&state=paused&owner=user")
        self.assertEqual(([j["id"] for j in page["items"]], page["total"]), ([a["id"]], 1))
        page = await api.ok("GET", "/api/v1/jobs?q=comp&state=paused")
        self.assertEqual(page["total"], 2)
        page = await api.ok("GET", f"/api/v1/jobs?q=comp&project={a['project']}")
        self.assertEqual(page["total"], 2)

    async def test_badText(self) -> None:
        """
        NUL, a lone surrogate (in UTF-8 or not), text that is not UTF-8, and
        more than 255 characters are 400s naming the parameter: q as owner
        and project.
        """
        api = await self.api()
        await api.submit()
        for name in ("q", "owner", "project"):
            for value in ("%00", "a%00b", "%ED%A0%80", "%FF", "x" * 256):
                error = await self.error(api, f"/api/v1/jobs?{name}={value}")
                self.assertEqual(error["details"]["field"], name, (name, value))
                self.assertNotIn("\0", error["message"])
            page = await api.ok("GET", f"/api/v1/jobs?{name}={'x' * 255}")
            self.assertEqual(page["total"], 0)
        error = await self.error(api, "/api/v1/jobs?q=a&q=b")
        self.assertEqual(error["details"]["field"], "q")


class SortTests(Base):
    async def farm(self, api: API) -> list[dict[str, Any]]:
        """
        Jobs with ties in every column: priorities, titles, owners and
        states repeat.
        """
        specs = [
            ("user", "bravo", 50, True),
            ("operator", "alpha", 70, False),
            ("admin", "bravo", 50, False),
            ("user", "charlie", 10, True),
            ("admin", "alpha", 70, False),
            ("operator", "bravo", 50, True),
            ("user", "alpha", 90, False),
        ]
        for role, title, priority, paused in specs:
            await self.submitAs(api, role, title=title, priority=priority, paused=paused)
        # One finished (done, by cancel: canceled) and one touched later.
        jobs = (await api.ok("GET", "/api/v1/jobs?limit=500"))["items"]
        await api.ok("POST", f"/api/v1/jobs/{jobs[3]['id']}/cancel")
        await api.ok("PATCH", f"/api/v1/jobs/{jobs[5]['id']}", {"priority": 51})
        result: list[dict[str, Any]] = (await api.ok("GET", "/api/v1/jobs?limit=500"))["items"]
        return result

    async def expected(self, api: API, jobs: list[dict[str, Any]], sort: str) -> list[int]:
        name = sort.lstrip("-")
        if name == "updated":
            # Microseconds decide, which the document does not show.
            rows = await api.pool.query(
                "SELECT id FROM jobs ORDER BY updated_at "
                + ("DESC" if sort.startswith("-") else "ASC")
                + ", id DESC"
            )
            return [r[0] for r in rows]
        descending = sort.startswith("-")
        # Ties by id, newest first: sort by id descending, then (stably) by
        # the column.
        ordered = sorted(jobs, key=lambda j: j["id"], reverse=True)
        return [j["id"] for j in sorted(ordered, key=lambda j: j[name], reverse=descending)]

    async def test_everySort(self) -> None:
        """
        Each order, read whole and paged through two at a time with the
        next hrefs: the same jobs in the same order, none missing or twice.
        """
        api = await self.api()
        jobs = await self.farm(api)
        self.assertEqual(len(jobs), 7)
        for sort in SORTS:
            expected = await self.expected(api, jobs, sort)
            whole = await api.ok("GET", f"/api/v1/jobs?sort={sort}")
            self.assertEqual([j["id"] for j in whole["items"]], expected, sort)
            self.assertEqual((whole["total"], whole["next"]), (7, None))
            ids, hrefs, totals = await self.pages(api, f"/api/v1/jobs?sort={sort}&limit=2")
            self.assertEqual(ids, expected, sort)
            self.assertEqual(totals, [7] * 4, sort)
            self.assertEqual(len(hrefs), 3)
            for n, href in enumerate(hrefs, 1):
                params = query(href)
                self.assertEqual((params["sort"], params["limit"]), ([sort], ["2"]), href)
                if sort == "-id":
                    self.assertNotIn("offset", params)
                    self.assertEqual(params["after"], [str(ids[2 * n - 1])])
                else:
                    self.assertNotIn("after", params)
                    self.assertEqual(params["offset"], [str(2 * n)], href)

    async def test_defaultSort(self) -> None:
        api = await self.api()
        ids = [(await api.submit(title=f"j{i}"))["id"] for i in range(5)]
        page = await api.ok("GET", "/api/v1/jobs?limit=2")
        self.assertEqual(page["next"], f"/api/v1/jobs?limit=2&after={ids[3]}")
        seen, hrefs, totals = await self.pages(api, "/api/v1/jobs?limit=2")
        self.assertEqual(seen, ids[::-1])
        self.assertEqual(totals, [5, 5, 5])
        self.assertTrue(all("offset" not in h and "sort" not in h for h in hrefs), hrefs)
        # -id named is the default, and pages by after too.
        seen, hrefs, _ = await self.pages(api, "/api/v1/jobs?limit=2&sort=-id")
        self.assertEqual(seen, ids[::-1])
        self.assertTrue(all("after=" in h and "sort=-id" in h for h in hrefs), hrefs)
        page = await api.ok("GET", f"/api/v1/jobs?sort=-id&after={ids[2]}")
        self.assertEqual([j["id"] for j in page["items"]], ids[1::-1])
        self.assertEqual(page["total"], 5)

    async def test_carriesFilters(self) -> None:
        """
        The next href of a sorted, searched, filtered listing keeps q, the
        filters and the sort.
        """
        api = await self.api()
        for n in range(5):
            await self.submitAs(api, "user", title=f"Comp {n}", priority=n % 2, paused=True)
        await self.submitAs(api, "user", title="comp 9", priority=1)
        await self.submitAs(api, "admin", title="comp 8", paused=True)
        await self.submitAs(api, "user", title="light", paused=True)
        path = "/api/v1/jobs?q=comp&state=paused&owner=user&sort=priority&limit=2"
        ids, hrefs, totals = await self.pages(api, path)
        self.assertEqual(totals, [5, 5, 5])
        self.assertEqual(len(ids), 5)
        self.assertEqual(len(set(ids)), 5)
        for href in hrefs:
            params = query(href)
            self.assertEqual(
                {k: v for k, v in params.items() if k != "offset"},
                {"q": ["comp"], "state": ["paused"], "owner": ["user"], "sort": ["priority"],
                 "limit": ["2"]},
            )  # fmt: skip
        page = await api.ok("GET", "/api/v1/jobs?q=comp&state=paused&owner=user&sort=priority")
        self.assertEqual([j["id"] for j in page["items"]], ids)
        self.assertEqual([j["priority"] for j in page["items"]], [0, 0, 0, 1, 1])
        # Searched in the default order: after, with q kept.
        ids, hrefs, _ = await self.pages(api, "/api/v1/jobs?q=COMP&limit=3")
        self.assertEqual(len(ids), 7)
        self.assertEqual(query(hrefs[0])["q"], ["COMP"])


class OffsetTests(Base):
    async def test_offset(self) -> None:
        api = await self.api()
        ids = [(await api.submit(title=f"j{i}", priority=i % 3))["id"] for i in range(6)]
        newest = ids[::-1]
        page = await api.ok("GET", "/api/v1/jobs?offset=2&limit=2")
        self.assertEqual([j["id"] for j in page["items"]], newest[2:4])
        # The default order pages on by after from there.
        self.assertEqual(page["next"], f"/api/v1/jobs?limit=2&after={newest[3]}")
        self.assertEqual(page["total"], 6)
        page = await api.ok("GET", f"/api/v1/jobs?after={newest[1]}&offset=1")
        self.assertEqual([j["id"] for j in page["items"]], newest[3:])
        byPriority = await api.ok("GET", "/api/v1/jobs?sort=-priority")
        order = [j["id"] for j in byPriority["items"]]
        page = await api.ok("GET", "/api/v1/jobs?sort=-priority&offset=3&limit=2")
        self.assertEqual([j["id"] for j in page["items"]], order[3:5])
        self.assertEqual(query(page["next"])["offset"], ["5"])
        page = await api.ok("GET", page["next"])
        self.assertEqual(([j["id"] for j in page["items"]], page["next"]), (order[5:], None))
        for offset in (6, 100_000):
            page = await api.ok("GET", f"/api/v1/jobs?sort=title&offset={offset}")
            self.assertEqual((page["items"], page["next"], page["total"]), ([], None, 6))
        page = await api.ok("GET", "/api/v1/jobs?offset=0&sort=id")
        self.assertEqual([j["id"] for j in page["items"]], ids)


class TotalTests(Base):
    async def test_total(self) -> None:
        api = await self.api()
        page = await api.ok("GET", "/api/v1/jobs")
        self.assertEqual(page, {"items": [], "next": None, "total": 0})
        for n in range(4):
            await api.submit(paused=n % 2 == 0)
        ids, _, totals = await self.pages(api, "/api/v1/jobs?limit=1")
        self.assertEqual(totals, [4, 4, 4, 4])
        page = await api.ok("GET", f"/api/v1/jobs?after={ids[1]}")
        self.assertEqual((len(page["items"]), page["total"]), (2, 4))
        page = await api.ok("GET", "/api/v1/jobs?state=paused&limit=1")
        self.assertEqual((len(page["items"]), page["total"]), (1, 2))
        page = await api.ok("GET", "/api/v1/jobs?owner=nobody")
        self.assertEqual(page["total"], 0)


class RefusedTests(Base):
    async def test_badSort(self) -> None:
        api = await self.api()
        for value in ("name", "ID", "--id", "+id", "", "id,title", "%00", "-" * 300):
            error = await self.error(api, f"/api/v1/jobs?sort={value}")
            self.assertEqual(error["details"]["field"], "sort", value)
        error = await self.error(api, "/api/v1/jobs?sort=name")
        for allowed in SORTS:
            self.assertIn(allowed, error["message"])

    async def test_afterWithSort(self) -> None:
        """
        after pages only the default order: with another sort it is refused
        (422: the schema cannot say which parameters go together), naming
        after.
        """
        api = await self.api()
        await api.submit()
        for sort in SORTS[1:]:
            error = await self.error(api, f"/api/v1/jobs?sort={sort}&after=5", 422)
            self.assertEqual(error["details"]["field"], "after", sort)
            self.assertIn("offset", error["message"])
        await api.ok("GET", "/api/v1/jobs?sort=-id&after=5")

    async def test_badOffset(self) -> None:
        api = await self.api()
        for value in ("-1", "100001", "x", "1.5", "", "99999999999999999999999", "%D9%A1"):
            error = await self.error(api, f"/api/v1/jobs?offset={value}")
            self.assertEqual(error["details"]["field"], "offset", value)

    async def test_role(self) -> None:
        api = await self.api()
        reply = await api.call("GET", "/api/v1/jobs?q=x&sort=title", role="")
        self.assertEqual(reply.code, 401)
        reply = await api.call("GET", "/api/v1/jobs?q=x&sort=title", role="viewer")
        self.assertEqual(reply.code, 200)


class ClientTests(Base):
    async def test_searchAndSort(self) -> None:
        """
        masterd.client's jobs() passes search and sort on, and follows the
        offset hrefs of a sorted listing.
        """
        api = await self.api()
        for title, priority in [("comp b", 5), ("light", 9), ("Comp a", 5), ("comp c", 1)]:
            await api.submit(title=title, priority=priority)
        client = Client(api.base, TOKENS["viewer"])

        def titles(**kw: Any) -> list[str]:
            return [j.title for j in client.jobs(limit=1, **kw)]

        found = await deferToThread(titles, search="COMP", sort="-priority")
        self.assertEqual(found, ["Comp a", "comp b", "comp c"])
        found = await deferToThread(titles, sort="title")
        self.assertEqual(found, ["Comp a", "comp b", "comp c", "light"])
        found = await deferToThread(titles, search="comp")
        self.assertEqual(found, ["comp c", "Comp a", "comp b"])
