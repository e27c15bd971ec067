"""Which anomalies hold: findings debounced into raised and resolved records (pure).

A finding must be seen on every check for `for_s` before it is raised, and be gone
on every check for `for_s` before it is resolved; a check that could not look at a
signal (no data) neither raises nor resolves it. What the fleet's status, events and
metrics say comes from here, and changes only when an anomaly is raised or resolved:
a quiet fleet's status stays byte-identical (`status.status_essence`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wsfleet_operator.anomaly.detect import Finding
from wsfleet_operator.spec import AnomalyRecord, AnomalySignal

HISTORY_LIMIT = 20
"""Anomaly records kept in the status (open ones always kept)."""
Key = tuple[AnomalySignal, str]


@dataclass(frozen=True)
class Transitions:
    """What one check changed, and the live scores for the metrics."""

    raised: list[AnomalyRecord] = field(default_factory=list)
    resolved: list[AnomalyRecord] = field(default_factory=list)
    scores: dict[AnomalySignal, float] = field(default_factory=dict)
    """per signal checked, the highest `Finding.closeness` (0: no data to judge)"""


class AnomalyTracker:
    """The raised anomalies of one fleet, and the recent ones."""

    def __init__(self, for_s: float = 60.0, history: Iterable[AnomalyRecord] = ()) -> None:
        self.for_s = for_s
        self.history: list[AnomalyRecord] = list(history)
        self.active: dict[Key, AnomalyRecord] = {
            (r.signal, r.subject): r for r in self.history if r.resolved_at is None
        }
        """raised and not resolved (restored from the status after a restart)"""
        self._pending: dict[Key, float] = {}
        self._missing: dict[Key, float] = {}

    def is_active(self, signal: AnomalySignal, subject: str = "fleet") -> bool:
        return (signal, subject) in self.active

    def active_subjects(self, signal: AnomalySignal) -> set[str]:
        return {subject for s, subject in self.active if s is signal}

    def open(self) -> list[AnomalyRecord]:
        """The anomalies that hold now, oldest first."""
        return sorted(self.active.values(), key=lambda r: (r.at, r.signal, r.subject))

    def update(
        self, now: float, findings: Sequence[Finding], checked: Iterable[AnomalySignal]
    ) -> Transitions:
        """One check: the findings (anomalous or not) of the signals in `checked`."""
        looked = set(checked)
        out = Transitions(scores={s: 0.0 for s in looked})
        for f in findings:
            if f.signal in looked:
                out.scores[f.signal] = max(out.scores[f.signal], f.closeness)
        seen = {f.key: f for f in findings if f.signal in looked and f.anomalous}
        for key, finding in seen.items():
            if key in self.active:
                self._missing.pop(key, None)
                continue
            first = self._pending.setdefault(key, now)
            if now - first >= self.for_s:
                record = AnomalyRecord(
                    signal=finding.signal,
                    subject=finding.subject,
                    size=finding.size,
                    threshold=finding.threshold,
                    unit=finding.unit,
                    message=finding.message[:512],
                    at=round(first, 3),
                )
                del self._pending[key]
                self.active[key] = record
                self.history.append(record)
                out.raised.append(record)
        for key in [k for k in self._pending if k[0] in looked and k not in seen]:
            del self._pending[key]
        for key, record in list(self.active.items()):
            if key[0] not in looked or key in seen:
                continue
            gone = self._missing.setdefault(key, now)
            if now - gone >= self.for_s:
                resolved = record.model_copy(update={"resolved_at": round(gone, 3)})
                self.history = [resolved if r is record else r for r in self.history]
                del self.active[key]
                del self._missing[key]
                out.resolved.append(resolved)
        self._trim()
        return out

    def _trim(self) -> None:
        closed = [r for r in self.history if r.resolved_at is not None]
        drop = len(self.history) - HISTORY_LIMIT
        if drop > 0:
            gone = {id(r) for r in closed[:drop]}
            self.history = [r for r in self.history if id(r) not in gone]


def anomaly_condition(open_anomalies: Sequence[AnomalyRecord]) -> tuple[bool, str, str]:
    """(status, reason, message) of condition `Anomaly`: stable while nothing changes."""
    if not open_anomalies:
        return False, "NoAnomaly", "no anomaly detected"
    signals = sorted({r.signal.value for r in open_anomalies})
    message = "; ".join(r.message for r in open_anomalies)
    return True, "+".join(signals), message


def event_message(record: AnomalyRecord, resolved: bool = False) -> str:
    """The Event posted when `record` is raised or resolved."""
    where = "" if record.subject == "fleet" else f" ({record.subject})"
    if not resolved:
        return f"{record.signal.value}{where}: {record.message}"
    took = (record.resolved_at or record.at) - record.at
    return f"{record.signal.value}{where} resolved after {took:.0f} s: was {record.message}"
