"""The two-layer channel cache: L1 in process, L2 in Redis, invalidated across pods,
pre-warmed with the hottest channels."""
