"""
Webhooks through a transactional outbox: events written in the transaction
of the change that caused them (emit, and the triggers of migration 0010),
delivered by any master under a lease (outbox, sender, service), and the
webhooks themselves as the API changes them (store, models).
"""

from .emit import agentException, agentsLost, mastersDown
from .models import EVENT_TYPES
from .outbox import Claim, Outbox, Outcome
from .payload import USER_AGENT, sign, verify
from .sender import Sender, httpClient
from .service import LEASE_MARGIN_S, WebhookService, WebhookStats
from .store import WebhookStore

__all__ = [
    "EVENT_TYPES",
    "LEASE_MARGIN_S",
    "USER_AGENT",
    "Claim",
    "Outbox",
    "Outcome",
    "Sender",
    "WebhookService",
    "WebhookStats",
    "WebhookStore",
    "agentException",
    "agentsLost",
    "httpClient",
    "mastersDown",
    "sign",
    "verify",
]
