"""The wsfleet Kubernetes operator (kopf)."""
