"""Frames found by probing the gateway from outside (issue 17), for the live fuzz tests.

Each is a text frame that once got `unavailable` with a traceback, failed other clients'
requests, closed the connection (1011) or was stored and sent on as something that is no
JSON. Every one must now be answered with `bad_request` and a message saying why (the
fragment), its request id when it has a usable one, and leave the connection serving.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    name: str
    frame: bytes
    fragment: str
    """Part of the error message."""
    rid: int | None
    """The id the error echoes (None: the frame's id is unusable)."""


def _publish(data: bytes, rid: int) -> bytes:
    return b'{"id": %d, "op": "publish", "channel": "fuzz-corpus", "data": %b}' % (rid, data)


def _subscribe(since: bytes, rid: int) -> bytes:
    return b'{"id": %d, "op": "subscribe", "channel": "fuzz-corpus", "since": "%b"}' % (
        rid,
        since,
    )


CORPUS: list[Case] = [
    # lone surrogates: valid JSON escapes, no UTF-8 form
    Case("surrogate data", _publish(b'"\\ud800"', 9001), "lone surrogate", 9001),
    Case("surrogate low", _publish(b'"x\\udfffy"', 9002), "lone surrogate", 9002),
    Case("surrogate key", _publish(b'{"\\udc00": 1}', 9003), "lone surrogate", 9003),
    Case("surrogate deep", _publish(b'[[{"a": ["\\ud83d"]}]]', 9004), "lone surrogate", 9004),
    Case("surrogate id", b'{"id": "\\ud800", "op": "ping"}', "lone surrogate", None),
    # non-finite numbers
    Case("1e999", _publish(b"1e999", 9010), "not finite", 9010),
    Case("-1e999", _publish(b"-1e999", 9011), "not finite", 9011),
    Case("nested inf", _publish(b'{"a": [1, 2e308]}', 9012), "not finite", 9012),
    Case("Infinity", _publish(b"Infinity", 9013), "not valid JSON", None),
    Case("NaN", _publish(b"[NaN]", 9014), "not valid JSON", None),
    # offsets beyond Redis stream IDs (2^64) or not ASCII digits
    Case("2^64 ms", _subscribe(b"18446744073709551616-0", 9020), "not an offset", 9020),
    Case("2^64 seq", _subscribe(b"0-18446744073709551616", 9021), "not an offset", 9021),
    Case("huge ms", _subscribe(b"99999999999999999999999-0", 9022), "not an offset", 9022),
    Case("superscript", _subscribe(b"\\u00b2-0", 9023), "not an offset", 9023),
    Case("arabic digit", _subscribe(b"\\u0661-0", 9024), "not an offset", 9024),
    Case(
        "switch 2^64",
        b'{"id": 9025, "op": "switch", "from": "a", "to": "b", "since": "18446744073709551616-1"}',
        "not an offset",
        9025,
    ),
    # deep nesting (each under 4 KiB, so a gateway with a small frame limit parses it too)
    Case("deep array", _publish(b"[" * 1_900 + b"]" * 1_900, 9030), "nested too deeply", None),
    Case("deep open", b"[" * 4_000, "nested too deeply", None),
    Case("deep object", b'{"":' * 1_000, "nested too deeply", None),
    # invalid UTF-8
    Case("bad byte", b'{"id": 9040, "op": "ping", "x": "\xff"}', "not valid UTF-8", None),
    Case("cesu surrogate", _publish(b'"\xed\xa0\x80"', 9041), "not valid UTF-8", None),
    Case("overlong", _publish(b'"\xc0\xaf"', 9042), "not valid UTF-8", None),
    Case("truncated", b'{"id": 9043, "op": "ping"}\xe2\x82', "not valid UTF-8", None),
]
