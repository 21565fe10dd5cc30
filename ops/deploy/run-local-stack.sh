#!/usr/bin/env bash
# Watch the example app with a local Prometheus (and Grafana when installed).
#
#   ops/deploy/run-local-stack.sh            # Ctrl-C stops everything
#   echo '["scorer_outage"]' > "$STATE/faults.json"   # inject an outage (path printed below)
#
# Everything binds 127.0.0.1: app metrics :9464, drift textfiles :9465,
# Prometheus :9090, Grafana :3000. State lives in $RERANK_STACK_DIR (default: a
# new temporary directory).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${RERANK_STACK_DIR:-$(mktemp -d -t rerank-stack-XXXXXX)}
PY=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$STATE/textfiles" "$STATE/events"
[ -f "$STATE/faults.json" ] || echo '[]' > "$STATE/faults.json"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM

HF_HUB_OFFLINE=1 PYTHONPATH="$ROOT:$ROOT/ops" "$PY" "$ROOT/ops/deploy/example_app.py" \
  --port 9464 --drift-port 9465 --textfile-dir "$STATE/textfiles" \
  --faults-file "$STATE/faults.json" --event-log-dir "$STATE/events" &
pids+=($!)

prometheus --config.file="$ROOT/ops/deploy/prometheus/prometheus.yml" \
  --storage.tsdb.path="$STATE/tsdb" --web.listen-address=127.0.0.1:9090 \
  --log.level=warn &
pids+=($!)

if command -v grafana-server >/dev/null 2>&1; then
  GF_PATHS_PROVISIONING="$ROOT/ops/deploy/grafana/provisioning" \
  GF_PATHS_DATA="$STATE/grafana" GF_SERVER_HTTP_ADDR=127.0.0.1 \
  RERANK_DASHBOARDS_DIR="$ROOT/dashboards" \
    grafana-server --homepath "${GRAFANA_HOME:-/usr/share/grafana}" &
  pids+=($!)
  echo "Grafana:     http://127.0.0.1:3000 (folder 'Reranking')"
else
  echo "Grafana is not installed: dashboards are in $ROOT/dashboards (import them by hand)"
fi
echo "Prometheus:  http://127.0.0.1:9090/alerts"
echo "App metrics: http://127.0.0.1:9464/metrics"
echo "Faults:      $STATE/faults.json  (scorer_outage, scorer_slow, event_log_failure)"
echo "Drift:       rerank-ops drift --log-dir $STATE/events --current-days 0.01 --reference-days 0.02 --textfile $STATE/textfiles/rerank_drift.prom"
wait
