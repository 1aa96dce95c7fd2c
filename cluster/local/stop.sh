#!/usr/bin/env bash
# Stop what cluster/local/start.sh started (the MLflow server, the worker node, the head), and nothing else.
set -uo pipefail
cd "$(dirname "$0")/../.."
STATE=${FEWRAY_LOCAL_CLUSTER_DIR:-runs/local_cluster}
for name in mlflow worker head; do
    pidfile="$STATE/$name.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
done
echo "stopped the local cluster of $STATE"
