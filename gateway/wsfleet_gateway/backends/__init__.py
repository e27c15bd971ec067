"""Where channels live: the in-memory broker (one process) and Redis (a fleet)."""
