#!/usr/bin/env bash
# `make bench`: runs every benchmark in bench/ (each measures side by side in one run),
# keeps each one's full output in target/bench/, and ends with one table of the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${CARGO_TARGET_DIR:-target}/bench
mkdir -p "$out"
table=()
for script in bench/deploy.sh bench/create_invoices.sh bench/image.sh; do
  name=$(basename "$script" .sh)
  printf '\n\033[1m== %s\033[0m\n' "$script"
  if bash "$script" | tee "$out/$name.txt"; then
    while IFS= read -r line; do table+=("$name|${line#ratio }"); done < <(grep '^ratio ' "$out/$name.txt")
  else
    table+=("$name|failed: see $out/$name.txt")
  fi
done
printf '\n\033[1m== ratios\033[0m\n'
printf '%-16s %s\n' benchmark ratio
for row in "${table[@]}"; do printf '%-16s %s\n' "${row%%|*}" "${row#*|}"; done
