"""
The master's HTTP side: one Klein application on one site.
"""

from ._api import MasterAPI
from ._auth import Authenticator, Principal, requires
from ._errors import installErrorHandlers
from ._json import APIError, badRequest, encodeJSON, errorResponse, jsonResponse
from ._klein import RoutedKlein, routeTemplate
from ._readiness import Readiness
from ._request import UNMATCHED, MasterRequest
from ._site import HTTPService, MasterSite

__all__ = [
    "UNMATCHED",
    "APIError",
    "Authenticator",
    "HTTPService",
    "MasterAPI",
    "MasterRequest",
    "MasterSite",
    "Principal",
    "Readiness",
    "RoutedKlein",
    "badRequest",
    "encodeJSON",
    "errorResponse",
    "installErrorHandlers",
    "jsonResponse",
    "requires",
    "routeTemplate",
]
