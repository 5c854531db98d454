#!/usr/bin/env bash
# Times `deployer up` (fresh, then a no-op rerun) against the original guide's `aws` CLI
# steps (bench/original-guide.sh), side by side on one moto server in one run: first on
# loopback, then through `fakes aws-proxy --latency-ms 100` (a typical AWS API round
# trip: no call is answered sooner than 100 ms after it was sent, moto's own time
# included, as a real call's service time is part of its round trip), and prints the
# times, the API calls each made and the ratios, with the targets, and each `up`'s
# critical path: the longest chain of its calls that waited for one another (the
# deployer reports it), times the latency.
# Needs `make tools`; installs awscli into its own .venv-bench/ (awscli pins a botocore
# that moto's boto3 does not accept, so it must not share moto's .venv/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/moto_server ] || make tools >/dev/null
if [ ! -x .venv-bench/bin/aws ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check 'awscli==1.45.11'
fi
# Release builds, as people run them (a debug build spends more time in its own start-up
# than in some of the calls it times).
cargo build --release --quiet -p deployer -p fakes
bin=${CARGO_TARGET_DIR:-target}/release
deployer=$bin/deployer
LATENCY_MS=${LATENCY_MS:-100}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MOTO_IAM_LOAD_MANAGED_POLICIES=true .venv/bin/moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/fakes" aws-proxy --upstream "http://127.0.0.1:$port" --port "$proxy_port" --latency-ms "$LATENCY_MS" >/dev/null &
proxy=$!
trap 'kill $moto $proxy 2>/dev/null; wait $moto $proxy 2>/dev/null || true' EXIT
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
moto_url=http://127.0.0.1:$port
until curl -s "$moto_url/moto-api/" >/dev/null; do sleep 0.1; done

image=127.0.0.1:5000/qbo-invoice-processor@sha256:$(printf '1%.0s' {1..64})
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
count() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }

# One round against ENDPOINT: deployer fresh and no-op, then (after a reset) the guide.
# moto loads the AWS managed policies on first use: warmed up before each timed run.
round() {
  local label=$1 endpoint=$2
  export AWS_ENDPOINT_URL=$endpoint
  curl -s -X POST "$moto_url/moto-api/reset" >/dev/null
  "$deployer" diff --env local --image "$image" >/dev/null 2>&1
  local t0 t1 t2 t3 t4 fresh noop guide
  t0=$(now); fresh=$("$deployer" up --env local --image "$image" --yes --output json 2>/dev/null); t1=$(now)
  noop=$("$deployer" up --env local --image "$image" --yes --output json 2>/dev/null); t2=$(now)
  curl -s -X POST "$moto_url/moto-api/reset" >/dev/null
  "$deployer" diff --env local --image "$image" >/dev/null 2>&1
  t3=$(now); guide=$(AWS=.venv-bench/bin/aws bash bench/original-guide.sh); t4=$(now)
  up_s=$(secs "$t0" "$t1"); noop_s=$(secs "$t1" "$t2"); guide_s=$(secs "$t3" "$t4")
  up_chain=$(field '["calls"]["chain"]' <<<"$fresh"); noop_chain=$(field '["calls"]["chain"]' <<<"$noop")
  up_calls=$(field '["calls"]["chain_calls"]' <<<"$fresh"); noop_calls=$(field '["calls"]["chain_calls"]' <<<"$noop")
  printf '\n%-36s %8s %8s %8s %10s\n' "run ($label)" seconds reads writes resources
  printf '%-36s %8s %8s %8s %10s\n' "deployer up (fresh)" "$up_s" "$(field '["calls"]["reads"]' <<<"$fresh")" "$(field '["calls"]["writes"]' <<<"$fresh")" "$(field '["summary"]["created"]' <<<"$fresh")"
  printf '%-36s %8s %8s %8s %10s\n' "deployer up (no change)" "$noop_s" "$(field '["calls"]["reads"]' <<<"$noop")" "$(field '["calls"]["writes"]' <<<"$noop")" 0
  printf '%-36s %8s %17s %10s\n' "original guide, aws CLI" "$guide_s" "$(count calls "$guide") calls" 15
}

round "moto on loopback" "$moto_url"
loop_up=$up_s loop_noop=$noop_s loop_guide=$guide_s
round "${LATENCY_MS} ms per call" "http://127.0.0.1:$proxy_port"
python3 - "$loop_up" "$loop_noop" "$loop_guide" "$up_s" "$noop_s" "$guide_s" "$LATENCY_MS" "$up_chain" "$noop_chain" "$up_calls" "$noop_calls" <<'PY'
import ast, sys
lu, ln, lg, up, noop, guide = map(float, sys.argv[1:7])
ms = sys.argv[7]
up_chain, noop_chain = int(sys.argv[8]), int(sys.argv[9])
up_calls, noop_calls = sys.argv[10], sys.argv[11]
print()
print(f"on loopback: fresh up {lu:.2f} s, no-op up {ln:.2f} s, aws-CLI guide {lg:.2f} s (mostly the CLI's start-up)")
ok = lambda b: "met" if b else "MISSED"
print(f"at {ms} ms per call: no-op up {noop:.2f} s (target <= 0.6 s: {ok(noop <= 0.6)}), "
      f"fresh up {up:.2f} s (target <= 2.0 s: {ok(up <= 2.0)})")
# The critical path: the longest chain of calls that followed one another (each started
# after the one before it ended; calls in flight together count once), times the latency.
# Whatever the run takes beyond it is the deployer's own time and moto's queue (moto
# answers one call at a time; a burst of reads waits for it past the round trip).
# The target is the fresh up's; a no-op up's path is 3 calls, and its target is 0.6 s.
lat = float(ms) / 1000
for name, chain, took in (("fresh up", up_chain, up), ("no-op up", noop_chain, noop)):
    floor = chain * lat
    path = ast.literal_eval(up_calls if name == "fresh up" else noop_calls)
    target = f" (target <= 1.3x: {ok(took <= 1.3 * floor)})" if name == "fresh up" else ""
    print(f"critical path of the {name}: {chain} calls x {ms} ms = {floor:.2f} s: {', '.join(path)}")
    print(f"ratio deployer {name} / its critical path, {ms} ms per call: "
          f"{took / floor if floor else float('inf'):.2f}x{target}")
print(f"ratio aws-CLI guide / deployer fresh up, loopback: {lg / lu:.1f}x")
print(f"ratio aws-CLI guide / deployer fresh up, {ms} ms per call: {guide / up:.1f}x (target >= 4x: {ok(guide / up >= 4)})")
print(f"ratio aws-CLI guide / deployer no-op up, {ms} ms per call: {guide / noop:.1f}x")
PY
