#!/usr/bin/env bash
# Start an MLflow tracking server and a local Ray "cluster" (a head and one worker node, both on 127.0.0.1)
# whose jobs log to it (the nodes inherit MLFLOW_TRACKING_URI) and run with the venv's python (VENV/bin first
# on the nodes' PATH), then print the exports to use it. No venv needs to be active in the calling shell.
# Stop exactly these processes with cluster/local/stop.sh (not `ray stop`, which stops every Ray on the machine).
#
# Settings (environment): VENV (default .venv), FEWRAY_LOCAL_CLUSTER_DIR (state and logs, default
# runs/local_cluster), GCS_PORT 6380, DASHBOARD_PORT 8265, MLFLOW_PORT 5000, HEAD_CPUS 1, WORKER_CPUS 2,
# and the per-node agent ports HEAD_AGENT_PORT 52365 (+1 grpc, +2 metrics, +3 runtime-env) and
# WORKER_AGENT_PORT 52375 (same offsets): two nodes on one address must not share them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$(cd "${VENV:-.venv}/bin" && pwd)
STATE=${FEWRAY_LOCAL_CLUSTER_DIR:-runs/local_cluster}
GCS_PORT=${GCS_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
HEAD_AGENT_PORT=${HEAD_AGENT_PORT:-52365}
WORKER_AGENT_PORT=${WORKER_AGENT_PORT:-52375}
export RAY_AUTH_MODE=disabled   # the same for `ray start` and `ray job submit` (see ../shared/STACK.md)
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

agent_ports() {  # --dashboard-agent-* / metrics / runtime-env ports from a base port
    echo "--dashboard-agent-listen-port=$1 --dashboard-agent-grpc-port=$(($1 + 1))" \
         "--metrics-export-port=$(($1 + 2)) --runtime-env-agent-port=$(($1 + 3))"
}
ray_errors() {  # name: a Ray node's fatal "address already in use" lines, from its session's logs folder (named in
    # the node's log); its agents log there, and one that cannot bind its port stays alive without it
    logs=$(sed 's/\x1b\[[0-9;]*m//g' "$STATE/$1.log" | grep -o '/[^ ]*/logs/ray_process_exit.log' | head -n 1 || true)
    [ -n "$logs" ] || return 0
    grep -h "ERROR.*address already in use" "$(dirname "$logs")"/*.log 2>/dev/null | head -n 3 || true
}
wait_http() {  # URL, what, name (its pid file and log in $STATE): poll until something answers (any HTTP
    # status); fail at once when the process exited or a port it needs is taken
    for _ in $(seq 120); do
        code=$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "$1" || true)
        [ "$code" != "000" ] && return 0
        kill -0 "$(cat "$STATE/$3.pid")" 2>/dev/null || give_up "$2 exited before it answered on $1" "$3"
        [ -z "$(ray_errors "$3")" ] || give_up "$2 could not bind a port (set the ports: see the top of $0)" "$3"
        sleep 1
    done
    give_up "$2 did not answer on $1 in 120 s" "$3"
}
give_up() {  # what went wrong, name: say it with the end of its log, stop what this script started, exit 1
    errors=$(ray_errors "$2")
    if [ -n "$errors" ]; then
        echo "error: $1:" >&2
        echo "$errors" | sed 's/^/  /' >&2
    else
        echo "error: $1; the end of $STATE/$2.log:" >&2
        tail -n 15 "$STATE/$2.log" >&2
    fi
    FEWRAY_LOCAL_CLUSTER_DIR="$STATE" cluster/local/stop.sh > /dev/null
    exit 1
}

# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no server-side job runner (GenAI jobs; fewray runs none)
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup "$BIN/mlflow" server --backend-store-uri "sqlite:///$STATE/mlflow.db" \
    --artifacts-destination "$STATE/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" \
    > "$STATE/mlflow.log" 2>&1 &
echo $! > "$STATE/mlflow.pid"
wait_http "http://127.0.0.1:$MLFLOW_PORT/health" "the MLflow server" mlflow

# jobs on this cluster log to that server by default: the nodes (and so every job driver) inherit it
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
# the nodes, and so every job's entrypoint (`ray job submit ... -- python ...`) and worker, find the venv's
# python (torch, fewray's dependencies) first on PATH, also when start.sh runs from a shell without the venv
export PATH="$BIN:$PATH"

# --block keeps one process per node whose SIGTERM stops that node only (stop.sh uses the pid files)
# shellcheck disable=SC2046
nohup "$BIN/ray" start --head --block --node-ip-address=127.0.0.1 --port="$GCS_PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --num-cpus="${HEAD_CPUS:-1}" \
    --disable-usage-stats $(agent_ports "$HEAD_AGENT_PORT") > "$STATE/head.log" 2>&1 &
echo $! > "$STATE/head.pid"
wait_http "http://127.0.0.1:$DASHBOARD_PORT/api/version" "the Ray head's dashboard" head
wait_http "http://127.0.0.1:$HEAD_AGENT_PORT/" "the Ray head's job agent" head
# shellcheck disable=SC2046
nohup "$BIN/ray" start --block --address="127.0.0.1:$GCS_PORT" --node-ip-address=127.0.0.1 \
    --num-cpus="${WORKER_CPUS:-2}" --disable-usage-stats $(agent_ports "$WORKER_AGENT_PORT") \
    > "$STATE/worker.log" 2>&1 &
echo $! > "$STATE/worker.pid"
wait_http "http://127.0.0.1:$WORKER_AGENT_PORT/" "the Ray worker node" worker

echo "Ray dashboard http://127.0.0.1:$DASHBOARD_PORT, MLflow http://127.0.0.1:$MLFLOW_PORT"
echo "export RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT RAY_AUTH_MODE=disabled"
