"""
The audit trail: one row for every change a person or tool makes, written
in the transaction of that change, so that a committed change always has
its row and a refused or rolled-back one never does.
"""

from ._actor import Actor, record
from ._log import AuditLog
from .models import AuditEntry, AuditPage, AuditQuery

__all__ = ["Actor", "AuditEntry", "AuditLog", "AuditPage", "AuditQuery", "record"]
