"""
A Klein that tells each request which route template it matched, so that the
counters group C{/api/v1/jobs/17} and C{/api/v1/jobs/18} under
C{/api/v1/jobs/<id>} without any code in the routes.
"""

from __future__ import annotations

import re
from typing import Any

from klein import Klein
from werkzeug.routing import Map, MapAdapter

_CONVERTER = re.compile(r"<(?:[a-zA-Z_]+(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def routeTemplate(rule: str) -> str:
    """
    C{/api/v1/jobs/<int:id>} becomes C{/api/v1/jobs/<id>}.
    """
    return _CONVERTER.sub(r"<\1>", rule)


class _Map(Map):
    """
    werkzeug's Map without the IDNA encoding of an ASCII host name on every
    request (Klein binds the map per request, and the IDNA codec is pure
    Python: a measurable share of a small request). Routes never depend on
    the host here.
    """

    def bind(
        self,
        server_name: str,
        script_name: str | None = None,
        subdomain: str | None = None,
        url_scheme: str = "http",
        default_method: str = "GET",
        path_info: str | None = None,
        query_args: Any = None,
    ) -> MapAdapter:
        if self.host_matching or not server_name.isascii():
            return super().bind(server_name, script_name, subdomain, url_scheme,
                                default_method, path_info, query_args)  # fmt: skip
        return MapAdapter(
            self, server_name.lower(), script_name or "/",
            self.default_subdomain if subdomain is None else subdomain,
            url_scheme, path_info or "/", default_method, query_args,
        )  # fmt: skip


class RoutedKlein(Klein):
    _templates: dict[str, str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self._url_map = _Map()

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
