"""
What the scheduler shares out: limits (licences, counted over the whole
farm) and projects (shares of the farm by weight).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._base import Resource, iterate_pages

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11

    from ._jobs import Job


def limit_href(name: str) -> str:
    # Quoted: a name typed by a person must not turn into another path.
    return f"/api/v1/limits/{quote(str(name), safe='')}"


def project_href(name: str) -> str:
    return f"/api/v1/projects/{quote(str(name), safe='')}"


class Limit(Resource):
    """
    A limit: at most C{max} tasks of the layers naming it are assigned or
    running at once, over every master.
    """

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def href(self) -> str:
        return limit_href(self.name)

    @property
    def max(self) -> int:
        return int(self.raw["max"])

    @property
    def in_use(self) -> int:
        """
        Tasks holding it now (assigned or running): above C{max} for a
        while after the max was lowered, until enough of them finish.
        """
        return int(self.raw.get("in_use") or 0)

    @property
    def available(self) -> int:
        """
        How many more tasks may take it now (0 when it is full or over).
        """
        return max(0, self.max - self.in_use)

    @property
    def description(self) -> str:
        return str(self.raw.get("description") or "")

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def updated_at(self) -> datetime | None:
        return self._time("updated_at")

    def update(self, max: int | None = None, description: str | None = None) -> Self:
        """
        Change its max and/or description (C{PUT}; what is not given stays
        as it is); returns it as changed.
        """
        body = {
            "max": self.max if max is None else max,
            "description": self.description if description is None else description,
        }
        return self._update(self._transport.send_json("PUT", self.href, body))

    def delete(self) -> None:
        """
        Delete it; 409 while an unfinished job names it.
        """
        self._transport.request("DELETE", self.href)

    def __repr__(self) -> str:
        return f"<Limit {self.raw.get('name')} {self.raw.get('in_use')}/{self.raw.get('max')}>"


class Project(Resource):
    """
    A project: the jobs that share one slice of the farm. Within a
    priority, projects share the farm by C{weight} (1 unless set), then
    the jobs of a project share its slice by their own weights.
    """

    @property
    def name(self) -> str:
        return str(self.raw["name"])

    @property
    def href(self) -> str:
        return project_href(self.name)

    @property
    def weight(self) -> int:
        return int(self.raw.get("weight") or 1)

    @property
    def active(self) -> int:
        """
        Its tasks assigned or running now.
        """
        return int(self.raw.get("active") or 0)

    @property
    def queued(self) -> int:
        return int(self.raw.get("queued") or 0)

    @property
    def created_at(self) -> datetime | None:
        """
        When its weight was first set; C{None} for a project with the
        default weight.
        """
        return self._time("created_at")

    @property
    def updated_at(self) -> datetime | None:
        return self._time("updated_at")

    def jobs(self, state: str | None = None, limit: int = 50) -> Iterator[Job]:
        """
        Its jobs, newest first, over every page (C{limit} is the page size).
        """
        from ._jobs import Job

        query: dict[str, Any] = {"project": self.name, "state": state, "limit": limit}
        return iterate_pages(self._transport, "/api/v1/jobs", query,
                             lambda raw: Job(self._transport, raw))  # fmt: skip

    def update(self, weight: int) -> Self:
        return self._update(self._transport.send_json("PUT", self.href, {"weight": weight}))

    def delete(self) -> None:
        """
        Forget its weight (back to 1); its jobs are untouched.
        """
        self._transport.request("DELETE", self.href)

    def __repr__(self) -> str:
        return f"<Project {self.raw.get('name')!r} weight {self.raw.get('weight')}>"
