"""Admission, authentication, rate limits, quotas, bandwidth caps, the Redis circuit
breaker and the audit log, assembled per gateway by `wsfleet_gateway.layer.ProtectionLayer`."""
