#!/usr/bin/env bash
# Start a local Ray "cluster" (a head and one worker node, both on 127.0.0.1) and an MLflow tracking server
# the cluster logs to. Then: export RAY_ADDRESS=http://127.0.0.1:8265 MLFLOW_TRACKING_URI=http://127.0.0.1:5000
# Stop everything with cluster/local/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${VENV:-.venv}/bin
STATE=${FEWRAY_LOCAL_CLUSTER_DIR:-runs/local_cluster}
GCS_PORT=${GCS_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export RAY_AUTH_MODE=disabled   # the same for `ray start` and `ray job submit` (see ../shared/STACK.md)
mkdir -p "$STATE"
"$BIN/ray" start --head --node-ip-address=127.0.0.1 --port="$GCS_PORT" --dashboard-host=127.0.0.1 \
    --dashboard-port="$DASHBOARD_PORT" --num-cpus="${HEAD_CPUS:-1}" --disable-usage-stats
"$BIN/ray" start --address="127.0.0.1:$GCS_PORT" --node-ip-address=127.0.0.1 --num-cpus="${WORKER_CPUS:-2}" \
    --disable-usage-stats
nohup "$BIN/mlflow" server --backend-store-uri "sqlite:///$PWD/$STATE/mlflow.db" \
    --artifacts-destination "$PWD/$STATE/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" \
    > "$STATE/mlflow.log" 2>&1 &
echo $! > "$STATE/mlflow.pid"
for _ in $(seq 60); do
    curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" > /dev/null && break
    sleep 1
done
echo "Ray dashboard http://127.0.0.1:$DASHBOARD_PORT, MLflow http://127.0.0.1:$MLFLOW_PORT"
echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT RAY_AUTH_MODE=disabled"
