#!/usr/bin/env bash
# A local Ray cluster for `hierpt jobs`: its own temp dir and ports, stopped by process group, so it never
# touches other Ray instances on the machine (`ray stop` would stop them all).
#   cluster/local.sh start   -> prints RAY_API_SERVER_ADDRESS for the Jobs API (hierpt jobs), and on stderr the
#                               GCS address for drivers (RAY_ADDRESS of hierpt prep/train/run on this cluster)
#   cluster/local.sh stop
# Object-store credentials are the cluster's own: every Ray process inherits this script's environment, so
# export AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL ... before `start`, or name a file of
# KEY=VALUE lines in HIERPT_CLUSTER_ENV_FILE (as a Kubernetes secret would hold them). Jobs then reach the
# store without any secret in their specs or runtime envs.
# A multi-node cluster on one machine (spot drills: drain a node, kill it, add one back), all on 127.0.0.1:
#   HIERPT_NUM_CPUS=0 cluster/local.sh start             # a head that runs no training workers
#   cluster/local.sh add-node NAME [CPUS]                 # a worker node (own raylet), default 1 CPU
#   cluster/local.sh kill-node NAME                       # the node and all its processes vanish at once, as a
#                                                         # reclaimed spot VM does
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # paths from the script's own place: it runs from any directory
TEMP_DIR=${HIERPT_RAY_TEMP_DIR:-/tmp/hierpt-ray-$(id -u)}
# Default ports: none of Ray's own defaults (6379, 8265, 10001, 52365: another Ray on the machine holds them, and
# without its agent port the Jobs API cannot run jobs), none in Ray's worker port range 10002-19999, none in
# Linux's ephemeral range 32768-60999 (any outgoing connection may hold one). tests/cluster checks all three.
GCS_PORT=${HIERPT_RAY_PORT:-6390}
CLIENT_PORT=${HIERPT_CLIENT_PORT:-6391}
DASHBOARD_PORT=${HIERPT_DASHBOARD_PORT:-8275}
AGENT_PORT=${HIERPT_AGENT_PORT:-8276}
NUM_CPUS=${HIERPT_NUM_CPUS:-$(nproc)}
if [[ -z ${RAY:-} ]]; then
  if [[ -x $HERE/../.venv/bin/ray ]]; then RAY=$HERE/../.venv/bin/ray; else RAY=$(command -v ray || true); fi
fi
need_ray() {
  [[ -n $RAY && -x $RAY ]] && return
  echo "no ray command: run \`make install\` in $(dirname "$HERE"), or set RAY=PATH" >&2
  exit 1
}
# A node's processes: its process group and every descendant. Ray gives each worker, and a job's driver, a process
# group of its own, so a kill of the group alone leaves them training (and committing checkpoints) for seconds.
# Each listed process is frozen (SIGSTOP) and the list taken again until it stops growing, so nothing forks past
# it; then all are killed at once.
group_and_descendants() {
  ps -e -o pid=,ppid=,pgid= | awk -v group="$1" '
    { parent[$1] = $2; if ($3 == group) found[$1] = 1 }
    END {
      do {
        added = 0
        for (pid in parent) if (!(pid in found) && (parent[pid] in found)) { found[pid] = 1; added = 1 }
      } while (added)
      for (pid in found) print pid
    }'
}
kill_node_processes() {
  local pids before=""
  pids=$(group_and_descendants "$1" | sort -n)
  while [[ $pids != "$before" ]]; do
    before=$pids
    kill -STOP $pids 2>/dev/null || true
    pids=$(group_and_descendants "$1" | sort -n)
  done
  kill -KILL $pids 2>/dev/null || true
}
PGID_FILE="$TEMP_DIR/hierpt-cluster.pgid"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # bind to 127.0.0.1, not the host's routable address

case "${1:-}" in
  start)
    need_ray
    if [[ -f $PGID_FILE ]] && kill -0 -- "-$(cat "$PGID_FILE")" 2>/dev/null; then
      echo "already running (process group $(cat "$PGID_FILE"))" >&2
      echo "RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT"
      exit 0
    fi
    for port in "$GCS_PORT" "$CLIENT_PORT" "$DASHBOARD_PORT" "$AGENT_PORT"; do
      if ((port >= 10002 && port <= 19999)); then
        echo "port $port lies in Ray's worker port range 10002-19999: pick another (HIERPT_*_PORT)" >&2; exit 2
      fi
    done
    mkdir -p "$TEMP_DIR"
    if [[ -n ${HIERPT_CLUSTER_ENV_FILE:-} ]]; then
      set -a; source "$HIERPT_CLUSTER_ENV_FILE"; set +a
    fi
    held=$(compgen -e | grep -E '^AWS_' | tr '\n' ' ' || true)
    echo "cluster environment holds: ${held:-no AWS_* settings (s3:// run storage needs them)}" >&2  # names only
    # setsid: every Ray daemon of this cluster shares one new process group, recorded for `stop`. RAY_ADDRESS: Ray's
    # own actors (Ray Train's state actor) look their cluster up, and the machine may run other Ray instances.
    RAY_ADDRESS=127.0.0.1:$GCS_PORT setsid "$RAY" start --head --port="$GCS_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
      --dashboard-agent-listen-port="$AGENT_PORT" --ray-client-server-port="$CLIENT_PORT" \
      --num-cpus="$NUM_CPUS" --temp-dir="$TEMP_DIR" --disable-usage-stats >"$TEMP_DIR/start.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PGID_FILE"
    wait "$pid" || { cat "$TEMP_DIR/start.log" >&2; echo "ray start failed (log above)" >&2; exit 1; }
    echo "drivers on this cluster (hierpt prep/train/run): RAY_ADDRESS=127.0.0.1:$GCS_PORT" >&2
    echo "RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT"
    ;;
  add-node)
    name=${2:?usage: $0 add-node NAME [CPUS]}
    need_ray
    mkdir -p "$TEMP_DIR/nodes"
    setsid "$(dirname "$RAY")/python" "$HERE/ray_node.py" --address="127.0.0.1:$GCS_PORT" \
      --node-name="$name" --num-cpus="${3:-1}" --temp-dir="$TEMP_DIR" >"$TEMP_DIR/nodes/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$TEMP_DIR/nodes/$name.pgid"
    wait "$pid" || { cat "$TEMP_DIR/nodes/$name.log" >&2; echo "node $name failed to start (log above)" >&2; exit 1; }
    tail -n 1 "$TEMP_DIR/nodes/$name.log"
    ;;
  kill-node)
    name=${2:?usage: $0 kill-node NAME}
    [[ -f $TEMP_DIR/nodes/$name.pgid ]] || { echo "no node $name started from $TEMP_DIR" >&2; exit 2; }
    kill_node_processes "$(cat "$TEMP_DIR/nodes/$name.pgid")"
    rm -f "$TEMP_DIR/nodes/$name.pgid"
    ;;
  stop)
    for node in "$TEMP_DIR"/nodes/*.pgid; do
      [[ -f $node ]] && { kill_node_processes "$(cat "$node")"; rm -f "$node"; }
    done
    [[ -f $PGID_FILE ]] || { echo "no cluster started from $TEMP_DIR"; exit 0; }
    kill -TERM -- "-$(cat "$PGID_FILE")" 2>/dev/null || true
    for _ in {1..15}; do kill -0 -- "-$(cat "$PGID_FILE")" 2>/dev/null && sleep 0.2; done  # up to 3 s to exit
    kill_node_processes "$(cat "$PGID_FILE")"
    rm -f "$PGID_FILE"
    echo "stopped"
    ;;
  *)
    echo "usage: $0 start|stop|add-node NAME [CPUS]|kill-node NAME" >&2
    exit 2
    ;;
esac
