"""Headless Chromium negotiates permessage-deflate with the gateway by itself and reads
its compressed messages."""

from __future__ import annotations

import json

import pytest
from wsfleet_gateway.app import Gateway
from wsfleet_gateway.backends.memory import MemoryBroker
from wsfleet_gateway.deflate import Deflater

from tests.dashboard.browser import browser_page
from tests.gateway.helpers import make_settings
from tests.gateway.test_compression import BIG

EXCHANGE = """
async (url) => {
  const ws = new WebSocket(url);
  const inbox = [];
  let wake = null;
  ws.onmessage = (e) => { inbox.push(JSON.parse(e.data)); if (wake) wake(); };
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  const next = async (type) => {
    for (;;) {
      const i = inbox.findIndex((f) => f.type === type);
      if (i >= 0) return inbox.splice(i, 1)[0];
      await new Promise((ok) => { wake = ok; });
    }
  };
  await next("welcome");
  ws.send(JSON.stringify({op: "subscribe", id: 1, channel: "browser"}));
  await next("subscribed");
  ws.send(JSON.stringify({op: "publish", id: 2, channel: "browser", data: %s}));
  const message = await next("message");
  ws.close();
  return {extensions: ws.extensions, data: message.data};
}
"""


async def test_chromium_negotiates_and_decodes_compressed_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compressed: list[int] = []
    real = Deflater.compress

    def counting(self: Deflater, frame: bytes, wbits: int = 15) -> bytes:
        compressed.append(len(frame))
        return real(self, frame, wbits)

    monkeypatch.setattr(Deflater, "compress", counting)

    gateway = Gateway(make_settings(), broker=MemoryBroker())
    await gateway.start()
    try:
        async with browser_page() as page:
            await page.goto(f"{gateway.admin_url}/healthz")  # a local page: may open local sockets
            got = await page.evaluate(EXCHANGE % json.dumps(BIG), gateway.ws_url)
    finally:
        await gateway.stop()
    assert "permessage-deflate" in got["extensions"]
    assert "server_no_context_takeover" in got["extensions"]
    assert got["data"] == BIG
    assert compressed, "the message frame went compressed"
