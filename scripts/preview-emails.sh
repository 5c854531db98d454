#!/usr/bin/env bash
# Renders the two emails the bookkeeper receives, from a generated month, with no AWS
# account and no deployer: moto and the SaaS fakes on loopback, the monthly job, then
# the daily one. Saves the billing report (and its CSV) and the daily summary as files
# to open in a browser, and prints their paths.
#   scripts/preview-emails.sh [CLIENTS]      (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-50}
make --no-print-directory tools >/dev/null
cargo build --quiet --locked -p qbo-invoice-processor -p fakes
target=${CARGO_TARGET_DIR:-target}
bin=$target/debug
out=$target/preview
rm -rf "$out" && mkdir -p "$out"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "error: $2 did not start; see $out/$2.log" >&2; exit 1; }

moto_port=$(free_port); fakes_port=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 &
pids+=($!)
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE
wait_for "$AWS_ENDPOINT_URL/moto-api/" moto
"$bin/fakes" --port "$fakes_port" --clients "$clients" --seed-aws "$AWS_ENDPOINT_URL" \
  --state-table qbo-invoice-processor-job-state >"$out/fakes.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$fakes_port/_fakes/state" fakes
url=http://127.0.0.1:$fakes_port
export QBO_BASE_URL=$url/qbo QBO_TOKEN_URL=$url/qbo/oauth2/v1/tokens/bearer \
  CLICKUP_BASE_URL=$url/clickup/api/v2 ROBOCORP_BASE_URL=$url/robocorp/api/v1 \
  MSGRAPH_BASE_URL=$url/graph/v1.0 MSGRAPH_LOGIN_URL=$url/login \
  BOOKKEEPER_EMAIL=bookkeeper@example.com SENDER_EMAIL=billing@example.com \
  MS_GRAPH_HOSTNAME=example.sharepoint.com EXCLUDED_CUSTOMERS="10001 - AICPA" \
  ASSETS_DIR="$PWD/assets"
# The fakes generate last month (the job's default); a few clients fail on purpose.
"$bin/qbo-invoice-processor" --create-invoices >"$out/create-invoices.log" || true
"$bin/qbo-invoice-processor" --send-invoices >"$out/send-invoices.log" || true
curl -s "$url/_fakes/state" >"$out/state.json"
python3 - "$out" <<'PY'
import base64, json, sys
out = sys.argv[1]
s = json.load(open(f"{out}/state.json"))
for m in s["mails"]:
    msg = m["message"]
    name = "billing-report" if msg["subject"].startswith("Billing") else "summary-email"
    path = f"{out}/{name}.html"
    open(path, "w").write(msg["body"]["content"])
    print(f"{msg['subject']}\n  {path}")
    for a in msg.get("attachments", []):
        apath = f"{out}/{a['name']}"
        open(apath, "wb").write(base64.b64decode(a["contentBytes"]))
        print(f"  {apath}")
PY
