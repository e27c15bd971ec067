{{/*
wsfleet's recording rules and alerts. Metric names: the gateway's metrics contract
(wsfleet_*, gateway/wsfleet_gateway/metrics.py) and the operator's own metrics
(wsfleet_operator_*). tests/packaging/test_prometheus_rules.py runs `promtool check rules`
and `promtool test rules` on exactly this output.
*/}}
{{- define "wsfleet.prometheusRuleGroups" -}}
{{- $r := .Values.prometheus.rules -}}
{{- $le := toString $r.switchLatencyThresholdSeconds -}}
{{- $budget := printf "%.6g" (subf 1.0 (float64 $r.switchLatencySLO)) -}}
{{- $ms := printf "%.6g" (mulf (float64 $r.switchLatencyThresholdSeconds) 1000.0) -}}
{{- $alertLabels := $r.alertLabels -}}
groups:
  - name: wsfleet.slo.recording
    rules:
      {{- range $w := list "5m" "30m" "1h" "6h" }}
      # Share of channel switches slower than {{ $ms }} ms over {{ $w }}, per fleet.
      - record: wsfleet:channel_switch_slow_ratio:rate{{ $w }}
        expr: |
          1 - (
            sum by (namespace, fleet) (rate(wsfleet_channel_switch_seconds_bucket{le="{{ $le }}"}[{{ $w }}]))
            /
            sum by (namespace, fleet) (rate(wsfleet_channel_switch_seconds_count[{{ $w }}]))
          )
      {{- end }}
  - name: wsfleet.alerts
    rules:
      - alert: WsfleetSwitchLatencySLOBurnFast
        # 2 % of a 30-day error budget in one hour (14.4x burn), confirmed over 5 minutes.
        expr: |
          wsfleet:channel_switch_slow_ratio:rate1h > (14.4 * {{ $budget }})
          and
          wsfleet:channel_switch_slow_ratio:rate5m > (14.4 * {{ $budget }})
        for: 2m
        labels:
          severity: critical
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Channel switches in fleet {{ "{{ $labels.fleet }}" }} are slower than {{ $ms }} ms too often"
          description: >-
            {{ "{{ $value | humanizePercentage }}" }} of channel switches in
            {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} took longer than {{ $ms }} ms over the
            last hour; at this rate the {{ printf "%.6g" (mulf (float64 $r.switchLatencySLO) 100.0) }} % SLO's monthly error budget is gone in about 2 days.
            Check gateway CPU, Redis latency and whether the fleet is capped.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetswitchlatencysloburn
      - alert: WsfleetSwitchLatencySLOBurnSlow
        # 5 % of the error budget in six hours (6x burn), confirmed over 30 minutes.
        expr: |
          wsfleet:channel_switch_slow_ratio:rate6h > (6 * {{ $budget }})
          and
          wsfleet:channel_switch_slow_ratio:rate30m > (6 * {{ $budget }})
        for: 15m
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Channel switch latency SLO of fleet {{ "{{ $labels.fleet }}" }} is burning"
          description: >-
            {{ "{{ $value | humanizePercentage }}" }} of channel switches in
            {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} took longer than {{ $ms }} ms over 6 hours.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetswitchlatencysloburn
      - alert: WsfleetConnectionsNearNodeCap
        expr: |
          max by (namespace, fleet, pod) (wsfleet_connections / wsfleet_connections_limit) > {{ $r.connectionsNearCapRatio }}
        for: 5m
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Gateway {{ "{{ $labels.pod }}" }} is near its connection cap"
          description: >-
            {{ "{{ $labels.pod }}" }} holds {{ "{{ $value | humanizePercentage }}" }} of its connection cap;
            new connections will be refused with close code 4009. The autoscaler should add pods:
            check that the fleet is not capped and that metrics are available.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetconnectionsnearnodecap
      - alert: WsfleetMetricsUnavailable
        expr: |
          max by (namespace, fleet) (wsfleet_operator_metrics_available) == 0
        for: 5m
        labels:
          severity: critical
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "The operator cannot read metrics of fleet {{ "{{ $labels.fleet }}" }}"
          description: >-
            Prometheus queries for {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} fail or return
            nothing. The autoscaler holds the last good value, then falls back; it never scales
            down without data. Check the Prometheus URL in the fleet's spec and the scrape targets.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetmetricsunavailable
      - alert: WsfleetOperatorMetricsAbsent
        expr: |
          absent(up{job=~".*wsfleet.*operator.*"} == 1)
        for: 10m
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "No wsfleet operator is being scraped"
          description: >-
            Prometheus has no healthy scrape of the wsfleet operator; fleet alerts cannot fire.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetmetricsunavailable
      - alert: WsfleetFleetCapped
        # Nearly every autoscaling decision came out capped (spec.replicas.max, the step
        # limits or the cost guard) for fleetCappedFor.
        expr: |
          (
            sum by (namespace, fleet) (rate(wsfleet_operator_decisions_total{mode="Capped"}[5m]))
            /
            sum by (namespace, fleet) (rate(wsfleet_operator_decisions_total[5m]))
          ) > 0.9
        for: {{ $r.fleetCappedFor }}
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Fleet {{ "{{ $labels.fleet }}" }} wants more gateways than it may have"
          description: >-
            The autoscaler of {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} has been held at
            spec.replicas.max or by the cost guard for {{ $r.fleetCappedFor }}. Raise the cap or the
            cost guard if the load is real (see `kubectl describe wsf`).
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetfleetcapped
      - alert: WsfleetDrainStuck
        expr: |
          max by (namespace, fleet, pod) (wsfleet_drain_in_progress) == 1
        for: {{ $r.drainStuckFor }}
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Gateway {{ "{{ $labels.pod }}" }} has been draining for over {{ $r.drainStuckFor }}"
          description: >-
            A drain should end within the fleet's drain.gracePeriodSeconds. A pod still draining
            holds connections and a node's capacity; check its logs (event `drain.*`).
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetdrainstuck
      - alert: WsfleetForecastAccuracyLow
        # The same test as the fleet's condition ForecastAccurate=False (reason LowAccuracy):
        # backtest accuracy below the fleet's own spec.forecast.accuracyThreshold.
        expr: |
          max by (namespace, fleet) (wsfleet_operator_forecast_accuracy)
          < on (namespace, fleet)
          max by (namespace, fleet) (wsfleet_operator_forecast_accuracy_threshold)
        for: 1h
        labels:
          severity: info
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Forecast accuracy of fleet {{ "{{ $labels.fleet }}" }} is low"
          description: >-
            The backtested accuracy (1 - WAPE) is {{ "{{ $value | humanizePercentage }}" }}, below
            the fleet's spec.forecast.accuracyThreshold (condition ForecastAccurate=False,
            reason LowAccuracy); the forecast's weight in scaling decisions is reduced and
            pre-scaling before peaks is less reliable. Usually history is short or the traffic
            pattern changed; review spec.forecast.seasonPriors.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetforecastaccuracylow
      - alert: WsfleetLatencyAnomaly
        # The operator's anomaly detector: channel switch or message delivery p95 far above
        # its own seasonal expectation (condition Anomaly, reason SwitchLatency or
        # DeliveryLatency); the SLO burn alerts catch what is slow in absolute terms.
        expr: |
          max by (namespace, fleet, signal) (wsfleet_operator_anomaly{signal=~"SwitchLatency|DeliveryLatency"}) == 1
        for: {{ $r.latencyAnomalyFor }}
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "{{ "{{ $labels.signal }}" }} of fleet {{ "{{ $labels.fleet }}" }} is far above its seasonal expectation"
          description: >-
            The operator found the p95 of {{ "{{ $labels.signal }}" }} in
            {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} many robust standard deviations above
            what this hour of this day usually brings, for {{ $r.latencyAnomalyFor }}. `kubectl describe wsf`
            shows the size (condition Anomaly, status.anomalies). Check Redis latency, gateway CPU
            and a recent rollout.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetlatencyanomaly
      - alert: WsfleetConnectionFlood
        # A burst of connection attempts, most of them from each gateway's top user or top
        # address (condition Anomaly, reason ConnectFlood).
        expr: |
          max by (namespace, fleet) (wsfleet_operator_anomaly{signal="ConnectFlood"}) == 1
        for: {{ $r.connectionFloodFor }}
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "Connection flood on fleet {{ "{{ $labels.fleet }}" }}"
          description: >-
            New connections to {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} burst far above their
            recent rate, concentrated on few users or addresses. The gateways' per-user limits refuse
            most of them (rejections by reason); the audit log (`admission_rejected`) names the user
            and address.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetconnectionflood
      - alert: WsfleetMemoryLeak
        # A gateway pod's memory grows beyond what its connections and L1 cache explain
        # (condition Anomaly, reason MemoryLeak; the pod is in the condition's message).
        expr: |
          max by (namespace, fleet) (wsfleet_operator_anomaly{signal="MemoryLeak"}) == 1
        for: {{ $r.memoryLeakFor }}
        labels:
          severity: warning
          {{- with $alertLabels }}{{ toYaml . | nindent 10 }}{{ end }}
        annotations:
          summary: "A gateway of fleet {{ "{{ $labels.fleet }}" }} is leaking memory"
          description: >-
            The memory of a pod of {{ "{{ $labels.namespace }}/{{ $labels.fleet }}" }} has grown beyond
            what its connections explain for {{ $r.memoryLeakFor }} (`kubectl describe wsf` names the pod and
            the rate). Deleting the pod drains it without losing a message; keep its logs and a heap
            profile first if you can.
          runbook_url: https://github.com/wsfleet/wsfleet/blob/main/docs/operate.md#wsfleetmemoryleak
{{- end -}}
