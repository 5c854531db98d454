#!/usr/bin/env bash
# Builds the job in release mode, pushes its image to a local registry with
# `deployer push-image` (no Docker), and prints the compressed size, the first push
# time and the time of a second, unchanged push. Needs `make tools`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/docker-registry ] || make tools >/dev/null
cargo build --quiet --release -p qbo-invoice-processor
cargo build --quiet -p deployer
target=${CARGO_TARGET_DIR:-target}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$dir/data" "$port" >"$dir/config.yml"
docker-registry serve "$dir/config.yml" >/dev/null 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null; wait $registry 2>/dev/null || true; rm -rf "$dir"' EXIT
until curl -s "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done

push() {
  DEPLOYER_REGISTRY=127.0.0.1:$port "$target/debug/deployer" push-image --env local \
    --binary "$target/release/qbo-invoice-processor" --output json
}
first=$(push)
second=$(push)
python3 - "$first" "$second" <<'PY'
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:])
mib = lambda n: n / 1048576
print(f"{'image (release build)':<34} {'MiB':>8} {'push s':>8} {'blobs up':>9}")
print(f"{'first push':<34} {mib(a['compressed_bytes']):8.2f} {a['seconds']:8.2f} {len(a['uploaded']):9}")
print(f"{'second push, unchanged':<34} {mib(b['compressed_bytes']):8.2f} {b['seconds']:8.2f} {len(b['uploaded']):9}")
for l in a["layers"]:
    print(f"  {l['name']:<6} layer {mib(l['bytes']):8.2f} MiB")
print(f"same digest both times: {a['digest'] == b['digest']}")
# Both pushes assemble the layers again (that is most of the time); the second
# uploads nothing, as every blob is already there.
up = lambda r: sum(u["bytes"] for u in r["uploaded"])
print(f"\nratio bytes uploaded, second push / first: {up(b) / max(up(a), 1):.2f}x")
PY
