#!/usr/bin/env bash
# Times `qbo-invoice-processor --create-invoices` for a generated month of 300 clients
# against the fakes with 50 ms latency on every call and the real limits (QBO 10 in
# flight and 500/min; ClickUp 1,000/min, the Business Plus plan), and the same month
# with --concurrency 1, side by side in one run. Prints the floor the limits impose
# for the calls the job made, and the ratio of the measured time to it.
# Needs `make tools` (moto); CLIENTS, LATENCY_MS and CONCURRENCY override the sizes,
# QUICK=1 skips the --concurrency 1 run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/moto_server ] || make tools >/dev/null
# Release builds, as the image ships: the first one takes a few minutes. One package
# at a time, so the job is built exactly as push-image builds it (and not twice).
cargo build --release --quiet -p qbo-invoice-processor
cargo build --release --quiet -p fakes
bin=${CARGO_TARGET_DIR:-target}/release
clients=${CLIENTS:-300}
latency=${LATENCY_MS:-50}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
moto_port=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
moto=$!
fakes=
trap 'kill $moto $fakes 2>/dev/null; wait 2>/dev/null' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
until curl -s "$AWS_ENDPOINT_URL/moto-api/" >/dev/null; do sleep 0.1; done

state=$(mktemp -d)
# One timed run on fresh fakes (and freshly seeded secrets and table): seconds, then
# the fakes' state in $state/NAME.json.
run() {
  local name=$1; shift
  local port; port=$(free_port)
  "$bin/fakes" --port "$port" --clients "$clients" --period 2026-10 --latency-ms "$latency" \
    --clickup-per-minute 1000 --seed-aws "$AWS_ENDPOINT_URL" >"$state/$name.fakes" 2>&1 &
  fakes=$!
  until curl -s "http://127.0.0.1:$port/_fakes/state" >/dev/null; do sleep 0.05; done
  local url=http://127.0.0.1:$port
  local t0; t0=$(date +%s.%N)
  QBO_BASE_URL=$url/qbo QBO_TOKEN_URL=$url/qbo/oauth2/v1/tokens/bearer \
    CLICKUP_BASE_URL=$url/clickup/api/v2 ROBOCORP_BASE_URL=$url/robocorp/api/v1 \
    MSGRAPH_BASE_URL=$url/graph/v1.0 MSGRAPH_LOGIN_URL=$url/login \
    EXCLUDED_CUSTOMERS="10001 - AICPA" \
    ${TIMER:-} "$bin/qbo-invoice-processor" --create-invoices --period 2026-10 "$@" >"$state/$name.log" || true
  local t1; t1=$(date +%s.%N)
  curl -s "$url/_fakes/state" >"$state/$name.json"
  kill $fakes; wait $fakes 2>/dev/null || true
  fakes=
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

fast=$(run default ${CONCURRENCY:+--concurrency "$CONCURRENCY"})
slow=$(if [ -n "${QUICK:-}" ]; then echo 0; else run sequential --concurrency 1; fi)

python3 - "$state" "$fast" "$slow" "$latency" "$clients" <<'PY'
import json, math, sys
d, fast, slow, latency, clients = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]) / 1000, int(sys.argv[5])
s = json.load(open(f"{d}/default.json"))
stats = s["stats"]
calls = lambda svc: stats.get(svc, {}).get("calls", 0)
creates = sum(1 for c in s["calls"] if c["service"] == "qbo" and c["path"].endswith("/invoice") and c["status"] == 200)
pages = max(1, max((sum(1 for c in s["calls"] if c["path"] == p) for p in {c["path"] for c in s["calls"] if c["path"].endswith("/process-runs")}), default=1))
# What must happen one after another: the token, the up-front QBO lookup, then one
# client's Control Room page, ClickUp list and create before its invoice. QBO holds
# 10 in flight, so the invoices take ceil(creates / 10) latencies at best; each
# per-minute budget adds a minute for every full budget the calls use past the first.
chain = (2 + 1 + 2) * latency
qbo_floor = math.ceil(creates / 10) * latency + 60 * ((calls("qbo") - 1) // 500)
clickup_floor = 60 * ((calls("clickup") - 1) // 1000)
floor = chain + max(qbo_floor, clickup_floor)
print(f"create-invoices: {clients} clients, {int(latency * 1000)} ms latency per call, QBO 10 in flight + 500/min, ClickUp 1,000/min")
print(f"{'run':34} {'seconds':>8} {'QBO':>6} {'ClickUp':>8} {'Control Room':>13} {'invoices':>9}")
for name, secs in (("default", fast), ("sequential", slow)):
    if secs == 0:
        continue
    st = json.load(open(f"{d}/{name}.json"))
    label = "job, default concurrency" if name == "default" else "job, --concurrency 1"
    print(f"{label:34} {secs:8.2f} {st['stats']['qbo']['calls']:6} {st['stats']['clickup']['calls']:8} {st['stats']['robocorp']['calls']:13} {len(st['invoices']):9}")
print(f"{'floor the limits impose':34} {floor:8.2f}   ({creates} invoices / 10 in flight x {int(latency*1000)} ms + {int(chain*1000)} ms chain)")
print(f"QBO most in flight {stats['qbo']['max_in_flight']}, most in a minute {stats['qbo']['max_per_minute']}, 429s {stats['qbo']['throttled']}; ClickUp 429s {stats['clickup']['throttled']}")
print(f"\nratio measured / floor: {fast / floor:.2f}x (goal: at most 1.25x)")
if slow:
    print(f"ratio --concurrency 1 / default: {slow / fast:.1f}x")
PY
