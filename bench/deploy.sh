#!/usr/bin/env bash
# Times `deployer up` (fresh, then a no-op rerun) against the original guide's `aws` CLI
# steps (bench/original-guide.sh), side by side on one moto server in one run, and
# prints the ratios and the API calls each made. Needs `make tools`; installs awscli
# into .venv/ when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/moto_server ] || make tools >/dev/null
[ -x .venv/bin/aws ] || .venv/bin/pip install --quiet --disable-pip-version-check 'awscli==1.45.11'
cargo build --quiet -p deployer
deployer=${CARGO_TARGET_DIR:-target}/debug/deployer

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true .venv/bin/moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; wait $moto 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
until curl -s "$AWS_ENDPOINT_URL/moto-api/" >/dev/null; do sleep 0.1; done

image=127.0.0.1:5000/qbo-invoice-processor@sha256:$(printf '1%.0s' {1..64})
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }

# moto loads the AWS managed policies on first use: warm it up before each timed run.
warm() { "$deployer" diff --env local --image "$image" >/dev/null 2>&1; }
warm
t0=$(now); fresh=$("$deployer" up --env local --image "$image" --yes --output json 2>/dev/null); t1=$(now)
noop=$("$deployer" up --env local --image "$image" --yes --output json 2>/dev/null); t2=$(now)
curl -s -X POST "$AWS_ENDPOINT_URL/moto-api/reset" >/dev/null
warm
t3=$(now); guide=$(AWS=.venv/bin/aws bash bench/original-guide.sh); t4=$(now)
rerun=$(CONTINUE=1 AWS=.venv/bin/aws bash bench/original-guide.sh 2>/dev/null); t5=$(now)

up_s=$(secs "$t0" "$t1"); noop_s=$(secs "$t1" "$t2"); guide_s=$(secs "$t3" "$t4"); rerun_s=$(secs "$t4" "$t5")
printf '%-34s %8s %8s %8s %10s\n' "run (moto on loopback)" seconds reads writes resources
printf '%-34s %8s %8s %8s %10s\n' "deployer up (fresh)" "$up_s" "$(field '["calls"]["reads"]' <<<"$fresh")" "$(field '["calls"]["writes"]' <<<"$fresh")" "$(field '["summary"]["created"]' <<<"$fresh")"
printf '%-34s %8s %8s %8s %10s\n' "deployer up (no change)" "$noop_s" "$(field '["calls"]["reads"]' <<<"$noop")" "$(field '["calls"]["writes"]' <<<"$noop")" 0
count() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }
printf '%-34s %8s %17s %10s\n' "original guide, aws CLI" "$guide_s" "$(count calls "$guide") calls" 15
printf '%-34s %8s %17s %10s\n' "original guide again" "$rerun_s" "$(count calls "$rerun") calls" "$(count failed "$rerun") failed"
python3 - "$up_s" "$noop_s" "$guide_s" <<'PY'
import sys
up, noop, guide = map(float, sys.argv[1:])
print(f"\nratio aws-CLI guide / deployer fresh up: {guide / up:.1f}x")
print(f"ratio aws-CLI guide / deployer no-op up: {guide / noop:.1f}x")
PY
