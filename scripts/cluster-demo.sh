#!/usr/bin/env bash
# A local two-node Ray cluster on this one machine, with the run store in PostgreSQL:
#   bash scripts/cluster-demo.sh           # the dashboard on http://localhost:8501 (Ctrl-C stops all)
#   bash scripts/cluster-demo.sh --check   # four tiny demo jobs through the queue; prints where each ran
# Everything lives in .lab-cluster/ (LAB_DEMO_DIR) and is stopped on exit: PostgreSQL (initdb +
# pg_ctl from Debian's postgresql package, run as the `postgres` user when started as root)
# and both Ray nodes (one CPU each), stopped by their own process ids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=$PWD/.venv/bin/python
DEMO=$(realpath -m "${LAB_DEMO_DIR:-.lab-cluster}")
rm -rf "$DEMO" && mkdir -p "$DEMO/lab"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PGBIN=${PGBIN:-$(dirname "$(command -v initdb)")}
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
PGDIR=$(mktemp -d /tmp/lab-cluster-pg-XXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
cleanup() {
  "$PY" -m core.raylaunch stop-local "$DEMO/ray" || true
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w start \
  -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" >/dev/null
echo "PostgreSQL on 127.0.0.1:$PGPORT"

RAYPORT=$(free_port)
.venv/bin/ray start --head --port "$RAYPORT" --num-cpus 1 --include-dashboard=false \
  --temp-dir "$DEMO/ray" --disable-usage-stats >/dev/null
.venv/bin/ray start --address "127.0.0.1:$RAYPORT" --num-cpus 1 --disable-usage-stats >/dev/null
echo "Ray head on 127.0.0.1:$RAYPORT, plus a second node (1 CPU each)"

export LAB_DB_URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
export LAB_RAY_ADDRESS="127.0.0.1:$RAYPORT"
export LAB_HOME="$DEMO/lab" IMDB_DATA=${IMDB_DATA:-demo} LAB_WARM_WORKERS=0
if [ "${1:-}" = "--check" ]; then
  "$PY" - <<'EOF'
import time

from core import jobs
from core.config import load_config
from core.store import RunStore

TINY = {"architecture": "lstm", "top_words": 100, "maxlen": 40, "embedding_dim": 8, "units": 4,
        "epochs": 1, "batch_size": 32, "train_size": 256, "test_size": 128, "seed": 1}
store = RunStore()
ids = [jobs.submit(store, load_config({**TINY, "seed": i, "name": f"demo {i}"})) for i in range(4)]
while any(r.active for r in jobs.refresh(store) if r.id in ids):
    time.sleep(0.5)
for run_id in ids:
    r = store.get(run_id)
    print(f"{r.id}  {r.status:10}  host {r.env.get('host')}  Ray node "
          f"{(r.env.get('ray_node') or '-')[:12]}  test acc {r.results.get('test_accuracy')}")
EOF
else
  .venv/bin/streamlit run app.py
fi
