#!/usr/bin/env bash
# Times `qbo-invoice-processor --create-invoices` against the strict fakes (QBO's
# documented limits on: 10 in flight, 10 a second, 500 a minute, 40 batches a minute;
# ClickUp 1,000 a minute, the Business Plus plan) in three runs, each on fresh fakes
# and a freshly seeded moto: 300 clients and 3,000 clients with 50 ms on every call,
# and 300 clients with 300 ms on QBO (closer to production). For each run it prints
# the seconds, the calls per service, each service's most in any second and minute, the
# 429s and the job's peak RSS; then the floor of every documented limit for the calls
# the run needs, the largest of them as the floor, and measured / floor.
# Needs `make tools`. RUNS="300:50:50 3000:50:50" (clients:latency:QBO latency) changes
# the runs; SLOW=1 adds 1,000 clients at ClickUp's 100 a minute (about 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/moto_server ] || make tools >/dev/null
# Release builds, as the image ships. One package at a time, so the job is built
# exactly as push-image builds it (and not twice).
cargo build --release --quiet -p qbo-invoice-processor
cargo build --release --quiet -p fakes
bin=${CARGO_TARGET_DIR:-target}/release
runs=${RUNS:-"300:50:50:1000 3000:50:50:1000 300:50:300:1000"}
[ -n "${SLOW:-}" ] && runs="$runs 1000:50:50:100"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
state=$(mktemp -d)
moto=; fakes=
# errexit holds inside the trap too: a kill with nothing left to kill must not fail the run.
trap 'kill $moto $fakes 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$state"' EXIT

n=0
for spec in $runs; do
  IFS=: read -r clients latency qbo_latency clickup <<<"$spec"
  n=$((n + 1))
  # A fresh moto and fresh fakes for each run.
  moto_port=$(free_port)
  .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
  moto=$!
  export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
  until curl -s "$AWS_ENDPOINT_URL/moto-api/" >/dev/null; do sleep 0.1; done
  port=$(free_port)
  "$bin/fakes" --port "$port" --clients "$clients" --period 2026-10 --latency-ms "$latency" \
    --qbo-latency-ms "$qbo_latency" --clickup-per-minute "$clickup" --seed-aws "$AWS_ENDPOINT_URL" \
    --state-table qbo-invoice-processor-job-state >"$state/$n.fakes" 2>&1 &
  fakes=$!
  until curl -s "http://127.0.0.1:$port/_fakes/state" >/dev/null; do sleep 0.05; done
  url=http://127.0.0.1:$port
  # The job alone is timed and measured (its peak RSS), by a small Python parent.
  QBO_BASE_URL=$url/qbo QBO_TOKEN_URL=$url/qbo/oauth2/v1/tokens/bearer \
    CLICKUP_BASE_URL=$url/clickup/api/v2 ROBOCORP_BASE_URL=$url/robocorp/api/v1 \
    MSGRAPH_BASE_URL=$url/graph/v1.0 MSGRAPH_LOGIN_URL=$url/login \
    EXCLUDED_CUSTOMERS="10001 - AICPA" \
    python3 - "$bin/qbo-invoice-processor" "$state/$n.log" >"$state/$n.time" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
with open(sys.argv[2], "w") as log:
    code = subprocess.call([sys.argv[1], "--create-invoices", "--period", "2026-10"], stdout=log)
secs = time.monotonic() - t0
rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{secs:.3f} {rss_kb} {code}")
PY
  curl -s "$url/_fakes/state" >"$state/$n.json"
  echo "$spec" >"$state/$n.spec"
  kill $fakes $moto; wait $fakes $moto 2>/dev/null || true
  fakes=; moto=
done

python3 - "$state" "$n" <<'PY'
import json, math, sys
d, count = sys.argv[1], int(sys.argv[2])
ratios = []
for i in range(1, count + 1):
    clients, lat, qlat, cu_limit = (int(x) for x in open(f"{d}/{i}.spec").read().split(":"))
    lat, qlat = lat / 1000, qlat / 1000
    secs, rss_kb, code = open(f"{d}/{i}.time").read().split()
    secs = float(secs)
    s = json.load(open(f"{d}/{i}.json"))
    st = s["stats"]
    get = lambda svc, k: st.get(svc, {}).get(k, 0)
    invoices = len(s["invoices"])
    entries = len(s["time_entries"])
    log = [json.loads(l) for l in open(f"{d}/{i}.log")]
    done = log[-1]
    # What the run needs at the least: the up-front lookup batches the job made (one
    # per 30 queries), one create per 30 invoices, two ClickUp reads (the Workspace's
    # members, then every member's entries: ClickUp lists only the caller's own
    # otherwise) and one create per entry, and two Control Room pages for the busiest
    # workspace.
    lookups = sum(1 for c in s["calls"] if c["service"] == "qbo" and c["path"].endswith("/batch")) - math.ceil(invoices / 30)
    lookups = max(lookups, 1)
    creates = math.ceil(invoices / 30)
    qbo_requests = lookups + creates
    batches = lookups + creates
    clickup_calls = 2 + entries
    # The first API request waits for the OAuth token (another host, at the run's
    # base latency); every QBO floor below starts there.
    token = lat
    floors = {
        "QBO 10 a second": token + (qbo_requests - 1) // 10 + qlat,
        "QBO 500 a minute": token + 60 * ((qbo_requests - 1) // 500) + qlat,
        "QBO 10 in flight x latency": token + math.ceil(qbo_requests / 10) * qlat,
        "QBO 40 batches a minute": token + 60 * ((batches - 1) // 40) + qlat,
        f"ClickUp {cu_limit:,} a minute": 60 * ((clickup_calls - 1) // cu_limit) + lat,
        # token -> lookup (QBO), Control Room's two pages and ClickUp's two reads meanwhile,
        # then one entry and its invoice's batch.
        "dependency chain": max(token + qlat, 2 * lat) + lat + qlat,
    }
    floor = max(floors.values())
    ratio = secs / floor
    ratios.append((clients, int(lat * 1000), int(qlat * 1000), cu_limit, ratio))
    print(f"\n== {clients:,} clients, {int(lat*1000)} ms a call, QBO {int(qlat*1000)} ms, ClickUp {cu_limit:,}/min")
    print(f"job: {secs:.2f} s, exit {code}, {invoices} invoices, {entries} time entries, peak RSS {int(rss_kb)/1024:.1f} MiB")
    print(f"{'service':12} {'calls':>7} {'most/s':>7} {'most/min':>9} {'429s':>5}")
    for svc in ("qbo", "qbo-oauth", "clickup", "robocorp"):
        print(f"{svc:12} {get(svc,'calls'):7} {get(svc,'max_per_second'):7} {get(svc,'max_per_minute'):9} {get(svc,'throttled'):5}")
    print(f"QBO batches: {get('qbo','batches')} (most in a minute {get('qbo','max_batches_per_minute')}); most in flight {get('qbo','max_in_flight')}")
    print("floor of each documented limit for this run's calls:")
    for name, f in floors.items():
        print(f"  {name:28} {f:8.2f} s")
    print(f"  {'floor (the largest)':28} {floor:8.2f} s")
    print(f"measured / floor: {ratio:.2f}x")
print()
for clients, lat, qlat, cu, ratio in ratios:
    print(f"ratio {clients} clients, QBO {qlat} ms, ClickUp {cu}/min, measured / floor: {ratio:.2f}x (goal: at most 1.2x)")
PY
