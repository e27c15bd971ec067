"""I/O edges of the forecast tools: CSV series, Prometheus range queries, fleet YAML."""

from __future__ import annotations

import csv
import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wsfleet_operator.forecast.time import FloatArray
from wsfleet_operator.spec import KIND, FleetSpec, parse_spec

MAX_POINTS_PER_QUERY = 10000
"""Prometheus refuses range queries of more than 11,000 points per series."""


@dataclass(frozen=True)
class Series:
    timestamps: FloatArray
    values: FloatArray
    numeric_timestamps: bool
    """the input's timestamps were unix seconds (else ISO-8601)"""


def parse_timestamp(text: str) -> tuple[float, bool]:
    """Unix seconds of an ISO-8601 (naive = UTC) or unix-seconds timestamp; and if numeric."""
    cleaned = text.strip()
    try:
        return float(cleaned), True
    except ValueError:
        pass
    parsed = datetime.fromisoformat(cleaned.replace("Z", "+00:00").replace(" ", "T", 1))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp(), False


def read_csv(path: Path) -> Series:
    """A `timestamp,value` CSV with a header row (columns found by name, else the first two).

    Empty or non-numeric values become NaN (gaps); rows are sorted by time.
    """
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if len(header) < 2:
            raise ValueError(f"{path}: need a header row with timestamp and value columns")
        ti = header.index("timestamp") if "timestamp" in header else 0
        vi = header.index("value") if "value" in header else 1
        times: list[float] = []
        values: list[float] = []
        numeric = True
        for row in reader:
            if not row or not row[ti].strip():
                continue
            stamp, is_number = parse_timestamp(row[ti])
            numeric &= is_number
            times.append(stamp)
            values.append(_number(row[vi]) if vi < len(row) else math.nan)
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    return Series(timestamps=t[order], values=v[order], numeric_timestamps=numeric and bool(times))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def write_csv(path: Path, timestamps: FloatArray, values: FloatArray) -> None:
    """`timestamp,value` with ISO-8601 UTC timestamps."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        for t, v in zip(timestamps.tolist(), values.tolist(), strict=True):
            writer.writerow([format_timestamp(t), repr(v)])


def format_timestamp(t: float) -> str:
    """ISO-8601 UTC with a Z suffix (seconds precision)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch_prometheus(
    url: str, query: str, start: float, end: float, step_s: float, timeout_s: float = 30.0
) -> Series:
    """Sum of the series a range query returns, fetched in chunks Prometheus accepts."""
    sums: dict[float, float] = {}
    chunk = step_s * (MAX_POINTS_PER_QUERY - 1)
    lo = start
    while lo <= end:
        hi = min(end, lo + chunk)
        params = urllib.parse.urlencode({"query": query, "start": lo, "end": hi, "step": step_s})
        endpoint = url.rstrip("/") + "/api/v1/query_range?" + params
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as response:
            body: dict[str, Any] = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus: {body.get('error', body)}")
        for result in body["data"]["result"]:
            for stamp, value in result["values"]:
                sums[float(stamp)] = sums.get(float(stamp), 0.0) + float(value)
        lo = hi + step_s
    t = np.asarray(sorted(sums), dtype=np.float64)
    v = np.asarray([sums[s] for s in t.tolist()], dtype=np.float64)
    return Series(timestamps=t, values=v, numeric_timestamps=True)


def read_fleet(path: Path) -> tuple[str, FleetSpec]:
    """Name and spec of the first WebSocketFleet in a YAML file."""
    with path.open() as handle:
        for doc in yaml.safe_load_all(handle):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                name = str((doc.get("metadata") or {}).get("name", path.stem))
                return name, parse_spec(doc.get("spec"))
    raise ValueError(f"{path}: no {KIND} document")
