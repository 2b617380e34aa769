"""
A Klein that tells each request which route template it matched, so that the
counters group C{/api/v1/jobs/17} and C{/api/v1/jobs/18} under
C{/api/v1/jobs/<id>} without any code in the routes.
"""

from __future__ import annotations

import re
from typing import Any

from klein import Klein

_CONVERTER = re.compile(r"<(?:[a-zA-Z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def routeTemplate(rule: str) -> str:
    """
    C{/api/v1/jobs/<int:id>} becomes C{/api/v1/jobs/<id>}.
    """
    return _CONVERTER.sub(r"<\1>", rule)


class RoutedKlein(Klein):
    _templates: dict[str, str] | None = None

    def _template(self, endpoint: str) -> str:
        templates = self._templates
        if templates is None or endpoint not in templates:
            templates = {
                rule.endpoint: routeTemplate(rule.rule) for rule in self.url_map.iter_rules()
            }
            self._templates = templates
        return templates.get(endpoint, endpoint)

    def execute_endpoint(self, endpoint: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        request.route = self._template(endpoint)
        return super().execute_endpoint(endpoint, request, *args, **kwargs)
