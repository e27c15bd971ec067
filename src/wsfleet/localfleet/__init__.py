"""The local fleet: a WebSocketFleet manifest run on this machine (`wsfleet up`).

Redis, Prometheus and N gateway processes sharing one public port with
``SO_REUSEPORT``, sized by the operator's own autoscaler through a
local-process scale target (scale up = start processes; scale down = SIGTERM
the emptiest and let it drain).
"""
