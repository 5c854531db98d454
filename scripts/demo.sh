#!/usr/bin/env bash
# `make demo`: the whole product on local emulators. Starts moto (AWS), the reference
# registry and the SaaS fakes (seeded with a month of generated clients, whose secrets
# and client table go into moto), and the local Fargate (the AWS proxy in front of moto
# that runs each ECS task's image under runc), then runs the deployer as a user would:
# push-image, diff, up, up again, verify (its check as a task), run-task create and
# send (as tasks), status. Ends with what happened and stops every server it started,
# whatever happens on the way.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory tools >/dev/null
echo "Building (the first build compiles the AWS SDK: about ten minutes on two cores)..."
cargo build --quiet --locked -p deployer -p qbo-invoice-processor -p fakes
target=${CARGO_TARGET_DIR:-target}
bin=$target/debug
out=$target/demo
rm -rf "$out" && mkdir -p "$out"
work=$(mktemp -d)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "error: $2 did not start; see $out/$3" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

moto_port=$(free_port); registry_port=$(free_port); fakes_port=$(free_port); proxy_port=$(free_port)
step "Starting moto (AWS) on :$moto_port, the registry on :$registry_port, the fakes on :$fakes_port"
MOTO_IAM_LOAD_MANAGED_POLICIES=true .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 &
pids+=($!)
cat >"$work/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$registry_port
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$out/registry.log" 2>&1 &
pids+=($!)
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE
wait_for "$AWS_ENDPOINT_URL/moto-api/" moto moto.log
wait_for "http://127.0.0.1:$registry_port/v2/" docker-registry registry.log
"$bin/fakes" --port "$fakes_port" --clients 50 --seed-aws "$AWS_ENDPOINT_URL" >"$out/fakes.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$fakes_port/_fakes/state" fakes fakes.log
cat "$out/fakes.log"
# Tasks run for real: the deployer talks to moto through the local Fargate.
"$bin/fakes" aws-proxy --upstream "$AWS_ENDPOINT_URL" --port "$proxy_port" --fargate us-east-1 >"$out/fargate.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$out/fargate.log" && break; sleep 0.1; done
grep -q listening "$out/fargate.log" || { echo "error: the local Fargate did not start: $(cat "$out/fargate.log")" >&2; exit 1; }
cat "$out/fargate.log"
export AWS_ENDPOINT_URL=http://127.0.0.1:$proxy_port

# The shipped local environment, pointed at this demo's ports.
mkdir -p "$work/envs"
sed -e "s/127.0.0.1:8080/127.0.0.1:$fakes_port/g" -e "s/127.0.0.1:5000/127.0.0.1:$registry_port/g" \
  infra/envs/local.toml >"$work/envs/local.toml"
deployer() { echo "\$ deployer $*"; "$bin/deployer" --env-dir "$work/envs" "$@"; }

step "Push the job's image (this build's binary) to the local registry"
deployer push-image --env local --binary "$bin/qbo-invoice-processor"
step "What up would do"
deployer diff --env local
step "Deploy"
deployer up --env local --yes
step "Deploy again: nothing to change"
deployer up --env local
step "Will tonight's run work? verify checks the deployment and runs the job's --check as a task"
# The generated month has three clients broken on purpose: verify names each with its
# fix (and exits 1), before any run meets them.
code=0
deployer verify --env local || code=$?
[ "$code" = 1 ] || { echo "error: verify exited $code; 1 was expected (three checks fail on purpose)" >&2; exit 1; }
echo "(exit code 1, as expected: the three generated clients broken on purpose, each with its fix)"
step "Run the monthly job as a task, its image under runc"
# The generated month has clients that fail on purpose (a malformed table item, a
# workspace without an API key, an unknown QBO customer), so the job exits 1.
code=0
deployer run-task create --env local >"$out/create-invoices.log" || code=$?
echo "(exit code $code; 1 is expected: three generated clients fail on purpose, each named below)"
tail -n 1 "$out/create-invoices.log"
grep '"event":"client_failed"' "$out/create-invoices.log" || true
step "Run the daily job as a task: send the invoices, email the bookkeeper"
deployer run-task send --env local >"$out/send-invoices.log" || true
tail -n 1 "$out/send-invoices.log"
step "The schedules fire: move the local Fargate's clock to the next 05:00 in Los Angeles"
# No waiting for tomorrow: the daily send's schedule fires at its cron time in its time
# zone, and starts its task as EventBridge Scheduler would.
from=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The next 05:30 in Los Angeles (today's or tomorrow's), in UTC: whatever the hour now,
# exactly one 05:00 lies between.
to=$(python3 -c '
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo
la = ZoneInfo("America/Los_Angeles")
now = datetime.now(la)
day = now.date() + timedelta(days=0 if now.time() < time(5, 30) else 1)
print(datetime.combine(day, time(5, 30), la).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
')
curl -s -X POST "$AWS_ENDPOINT_URL/_fargate/advance?from=$from&to=$to" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
fired = answer.get("fired") or sys.exit(f"error: no schedule fired: {answer}")
for f in fired:
    what = f["task"] or f["error"]
    print("  " + f["at"] + "  " + f["schedule"] + "  started task " + what.rsplit("/", 1)[-1])
'
# Let the fired task finish before status reads the runs.
sleep 8
step "Status"
deployer status --env local

step "What happened"
curl -s "http://127.0.0.1:$fakes_port/_fakes/state" >"$out/state.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
s = json.load(open(f"{out}/state.json"))
inv = s["invoices"]
total = sum(i["TotalAmt"] for i in inv)
sent = [i for i in inv if i["EmailStatus"] == "EmailSent"]
print(f"QBO invoices created: {len(inv)}, total {total:,.2f}; sent to clients: {len(sent)}")
for i in inv[:5]:
    line = i["Line"][0]
    print(f"  {i['DocNumber']:14} {i['CustomerRef']['name']:24} {line['SalesItemLineDetail']['Qty']:>6} min x {line['SalesItemLineDetail']['UnitPrice']} = {i['TotalAmt']:>9,.2f}  {i['EmailStatus']}")
if len(inv) > 5:
    print(f"  ... and {len(inv) - 5} more")
print(f"ClickUp time entries: {len(s['time_entries'])}")
import base64
print(f"Emails through Graph: {len(s['mails'])}")
for m in s["mails"]:
    msg = m["message"]
    to = ", ".join(r["emailAddress"]["address"] for r in msg["toRecipients"])
    # The monthly billing report, then the daily summary: each saved to open in a browser.
    name = "billing-report" if msg["subject"].startswith("Billing") else "summary-email"
    path = f"{out}/{name}.html"
    open(path, "w").write(msg["body"]["content"])
    print(f"  \"{msg['subject']}\" from {m['from']} to {to}")
    print(f"    saved at {path}")
    for a in msg.get("attachments", []):
        apath = f"{out}/{a['name']}"
        open(apath, "wb").write(base64.b64decode(a["contentBytes"]))
        print(f"    its attachment {a['name']} at {apath}")
print(f"Logs of both jobs: {out}/create-invoices.log, {out}/send-invoices.log")
PY
step "Stopping moto, the registry and the fakes"
