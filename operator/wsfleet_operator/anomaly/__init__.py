"""Anomaly detection beside the autoscaler (the brief's `detectPerformanceAnomalies`).

- `detect`: the pure detectors: latency against its seasonal expectation, connection
  floods from few users or addresses, memory that its connections do not explain;
- `track`: the pure state of raised and resolved anomalies (debounce, condition,
  status records);
- `watch`: the Prometheus edge that feeds them once per autoscaler tick.
"""
