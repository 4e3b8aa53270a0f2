"""The audit trail: one entry per dashboard action (who, what, on what, when, outcome).

A capped stream (``{ns}:audit``, in the namespace's first partition): operators read it
on ``/audit``; ``XADD ... MAXLEN ~`` keeps it bounded like the events stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..api.client import Client
from ..core.models import ms_to_dt

AUDIT_MAXLEN = 10_000


@dataclass
class AuditEntry:
    """One recorded action."""

    at: datetime | None
    who: str
    action: str
    target: str
    outcome: str


def record(client: Client, who: str, action: str, target: str, outcome: str) -> None:
    """Append one action to the audit stream."""
    fields = {"who": who, "action": action, "target": target, "outcome": outcome}
    client.redis.xadd(client.keys.audit, fields, maxlen=AUDIT_MAXLEN, approximate=True)


def recent(client: Client, limit: int = 200) -> list[AuditEntry]:
    """The newest actions first."""
    out = []
    for entry_id, f in client.redis.xrevrange(client.keys.audit, count=limit):
        out.append(
            AuditEntry(
                at=ms_to_dt(entry_id.split("-")[0]),
                who=f.get("who", ""),
                action=f.get("action", ""),
                target=f.get("target", ""),
                outcome=f.get("outcome", ""),
            )
        )
    return out
