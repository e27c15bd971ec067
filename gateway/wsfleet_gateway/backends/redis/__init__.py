"""The Redis backend: its own RESP connections (resp, lane, pubsub), Streams history,
the connection gate, and the broker over them."""
