"""What a run of the pipeline did: the reports commands print, tasks return and benchmarks read."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass
class SyncReport:
    """What one run did; commands print it and benchmarks read it."""

    claimed: int = 0
    pushed: int = 0
    failed: int = 0
    retried: int = 0
    jobs: int = 0
    requests: int = 0
    verified: int = 0
    #: Rows a stopped worker had sent: found applied in Klaviyo and not sent again.
    recovered: int = 0
    #: Requests that never reached Klaviyo (refused connection, timeout, DNS): their rows wait.
    unreachable: int = 0
    #: List membership rows (no consent) sent to Klaviyo, and given a verdict by a read-back.
    memberships_pushed: int = 0
    memberships_verified: int = 0
    verdicts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: SyncReport) -> None:
        for name in self._counters():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, value in other.verdicts.items():
            self.verdicts[key] += value

    def as_dict(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in self._counters()},
            "verdicts": dict(self.verdicts),
        }

    @classmethod
    def _counters(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "verdicts"]


@dataclass
class PullReport:
    profiles_read: int = 0
    profiles_mirrored: int = 0
    requests: int = 0
    not_found: list[int] = field(default_factory=list)
    verdicts_changed: int = 0
    drifts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "profiles_read": self.profiles_read,
            "profiles_mirrored": self.profiles_mirrored,
            "requests": self.requests,
            "not_found": len(self.not_found),
            "verdicts_changed": self.verdicts_changed,
            "drifts": self.drifts,
        }


@dataclass(frozen=True)
class Waiting:
    """``sync(wait=True)`` is about to sleep until the next retry falls due: what it waits for.

    ``seconds`` it sleeps now (at most 5, then it looks again); ``due_at`` the earliest pending
    row's next try; ``pending`` the rows left in the outbox; ``reason`` that row's last error in
    the app's words; ``unreachable`` when the last pass could not reach Klaviyo at all.
    """

    seconds: float
    due_at: datetime
    pending: int
    attempts: int
    reason: str
    unreachable: bool
