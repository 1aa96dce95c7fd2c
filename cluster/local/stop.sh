#!/usr/bin/env bash
# Stop what cluster/local/start.sh started: the MLflow server and the local Ray nodes.
set -uo pipefail
cd "$(dirname "$0")/../.."
STATE=${FEWRAY_LOCAL_CLUSTER_DIR:-runs/local_cluster}
if [ -f "$STATE/mlflow.pid" ]; then
    kill "$(cat "$STATE/mlflow.pid")" 2>/dev/null
    rm -f "$STATE/mlflow.pid"
fi
RAY_AUTH_MODE=disabled "${VENV:-.venv}/bin/ray" stop
