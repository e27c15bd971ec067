"""The presence requests of the wire protocol (issue 22): parsed, or refused with
``bad_request`` as every other request is."""

from __future__ import annotations

import pytest
from wsfleet_gateway.protocol import Presence, ProtocolError, parse_request


def test_presence_requests_parse() -> None:
    assert parse_request('{"id": 1, "op": "presence", "channel": "a"}') == Presence(1, "a")
    assert parse_request('{"id": "x", "op": "presence_stats", "channel": "a"}') == Presence(
        "x", "a", stats=True
    )
    for frame, message in [
        ('{"id": 1, "op": "presence"}', "missing field `channel`"),
        ('{"id": 1, "op": "presence_stats", "channel": "a b"}', "`channel` must be"),
        ('{"id": 1, "op": "presence", "channel": 5}', "`channel` must be a string"),
    ]:
        with pytest.raises(ProtocolError) as refused:
            parse_request(frame)
        assert refused.value.code == "bad_request"
        assert refused.value.request_id == 1
        assert message in refused.value.message
