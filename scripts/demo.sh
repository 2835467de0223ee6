#!/usr/bin/env bash
# End to end on this machine: generate data -> ingest -> popular, ALS, EASE, content -> hybrid, ranked -> offline evaluation
# -> snapshot -> gunicorn. EVALUATE=0 skips the evaluation (about a third of the pipeline's time).
# Called by `make demo` (which sets up the virtualenv and jars first).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
DEMO_DIR=${DEMO_DIR:-var/demo}
PORT=${PORT:-8000}
USERS=${USERS:-5000}
PRODUCTS=${PRODUCTS:-1000}
EVENTS=${EVENTS:-200000}
EVALUATE=${EVALUATE:-1}
START=2026-10-01
AS_OF=2026-10-31T00:00:00Z
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

for pidfile in "$DEMO_DIR/gunicorn.pid" "$DEMO_DIR/collector.pid"; do
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "stopping the previous demo server ($pidfile)"
    kill "$(cat "$pidfile")"; sleep 1
  fi
done
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
started=$(date +%s)

say "generating $EVENTS events, $USERS users, $PRODUCTS products into $DEMO_DIR/landing"
"$PY" -m jobs.generate_data --users "$USERS" --products "$PRODUCTS" --events "$EVENTS" \
  --seed 42 --start "$START" --days 30 --out "$DEMO_DIR/landing"

steps="ingest -> popular, ALS, EASE, content -> hybrid, ranked -> snapshot"
evaluate=()
if [ "$EVALUATE" = 1 ]; then steps="ingest -> popular, ALS, EASE, content -> hybrid, ranked -> evaluation -> snapshot"; evaluate=(--evaluate); fi
say "running the Spark pipeline ($steps), as of $AS_OF"
rc=0
"$PY" -m jobs.run_pipeline --data-dir "$DEMO_DIR" --as-of "$AS_OF" "${evaluate[@]}" \
  > "$DEMO_DIR/pipeline-summary.json" || rc=$?
tail -n 1 "$DEMO_DIR/pipeline-summary.json"
case $rc in
  0) ;;
  2) echo "warning: an algorithm failed; serving a degraded snapshot (see the summary above)" >&2 ;;
  *) echo "pipeline failed (exit $rc)" >&2; exit "$rc" ;;
esac

say "starting gunicorn on 127.0.0.1:$PORT"
RECSYS_DATA_DIR="$DEMO_DIR" LOOKUP_BIND="127.0.0.1:$PORT" \
  .venv/bin/gunicorn -c conf/gunicorn.conf.py --daemon --pid "$DEMO_DIR/gunicorn.pid" \
  --error-logfile "$DEMO_DIR/gunicorn.log"
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "server did not become ready; see $DEMO_DIR/gunicorn.log" >&2; exit 1; }

COLLECTOR_PORT=$((PORT + 1))
export COLLECTOR_TOKEN=${COLLECTOR_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')}
say "starting the event collector on 127.0.0.1:$COLLECTOR_PORT (token in $DEMO_DIR/collector.token)"
printf '%s\n' "$COLLECTOR_TOKEN" > "$DEMO_DIR/collector.token"; chmod 600 "$DEMO_DIR/collector.token"
RECSYS_DATA_DIR="$DEMO_DIR" COLLECTOR_BIND="127.0.0.1:$COLLECTOR_PORT" \
  .venv/bin/gunicorn -c conf/gunicorn.collector.conf.py --daemon --pid "$DEMO_DIR/collector.pid" \
  --error-logfile "$DEMO_DIR/collector.log"
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$COLLECTOR_PORT/healthz" >/dev/null && break
  sleep 0.2
done

user=$("$PY" - "$DEMO_DIR" <<'PY'
import json, sys, pathlib
# Any user from the first generated events file.
folder = pathlib.Path(sys.argv[1]) / "landing" / "events"
first = sorted(p for p in folder.iterdir() if not p.name.startswith("."))[0]
print(json.loads(first.open().readline())["user_id"]) if first.suffix == ".jsonl" else print(1)
PY
)
say "ready in $(( $(date +%s) - started )) s. Try:"
product=$(curl -s "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=1&algorithm=popular" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["product_id"])')
for url in "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=5" \
           "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=3&algorithm=als" \
           "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=3&algorithm=content" \
           "http://127.0.0.1:$PORT/v1/products/$product/similar?k=3" \
           "http://127.0.0.1:$PORT/v1/users/999999999/recommendations?k=3"; do
  echo "curl -s '$url'"
  curl -s "$url"; echo
done

say "real time: a brand-new user views product $product; their next answer follows at once"
new_user=987000001
echo "before: $(curl -s "http://127.0.0.1:$PORT/v1/users/$new_user/recommendations?k=3")"
echo "curl -s -X POST -H 'Authorization: Bearer \$(cat $DEMO_DIR/collector.token)' -H 'Content-Type: application/json' \\"
echo "     -d '{\"user_id\": $new_user, \"event_type\": \"view\", \"product_id\": $product}' http://127.0.0.1:$COLLECTOR_PORT/v1/events"
curl -s -X POST -H "Authorization: Bearer $COLLECTOR_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"user_id\": $new_user, \"event_type\": \"view\", \"product_id\": $product}" \
  "http://127.0.0.1:$COLLECTOR_PORT/v1/events"; echo
echo "after:  $(curl -s "http://127.0.0.1:$PORT/v1/users/$new_user/recommendations?k=3")"

say "catalog: product $product is deactivated; it leaves every answer at once, no rebuild"
ids() { "$PY" -c 'import json,sys; print([i["product_id"] for i in json.load(sys.stdin)["items"]])'; }
echo "user $user before: $(curl -s "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=5&algorithm=popular" | ids)"
echo "curl -s -X DELETE -H 'Authorization: Bearer \$(cat $DEMO_DIR/collector.token)' http://127.0.0.1:$COLLECTOR_PORT/v1/products/$product"
curl -s -X DELETE -H "Authorization: Bearer $COLLECTOR_TOKEN" "http://127.0.0.1:$COLLECTOR_PORT/v1/products/$product"; echo
echo "user $user after:  $(curl -s "http://127.0.0.1:$PORT/v1/users/$user/recommendations?k=5&algorithm=popular" | ids)"

echo
if [ -f "$DEMO_DIR/evaluation/report/report.html" ]; then
  "$PY" - "$DEMO_DIR/evaluation/policy.json" <<'PY'
import json, sys
policy = json.load(open(sys.argv[1]))
scores, floor = policy["priors"]["all"], policy.get("baseline", {}).get("all")
winner = policy["preference"][0]
versus = f", {scores[winner] / floor:.1f}x global popularity ({floor:.3f})" if floor else ""
print(f"offline evaluation, {policy['metric']} over all users: {winner} won with {scores[winner]:.3f}{versus}")
print("  then " + ", ".join(f"{a} {scores[a]:.3f}" for a in policy["preference"][1:]))
PY
  echo "report: $DEMO_DIR/evaluation/report/report.html"
fi
echo "OpenAPI: curl -s http://127.0.0.1:$PORT/openapi.json    metrics: curl -s http://127.0.0.1:$PORT/metrics"
echo "status page: http://127.0.0.1:$PORT/status    stop: make stop"
