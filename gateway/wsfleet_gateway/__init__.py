"""The wsfleet WebSocket channel gateway (picows + uvloop)."""
