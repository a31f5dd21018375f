#!/usr/bin/env bash
# Runs the library's tests (default features) against other Candle versions of the range the
# crate supports (Cargo.toml: candle-core / candle-nn >= 0.9.2, < 0.12; Cargo.lock holds the
# newest, which `cargo test` covers):
#   bash scripts/candle-versions.sh 0.9.2 0.10.2
# For each version: a copy of the repository (tracked and untracked, not ignored, files) with
# the workspace's Candle requirement pinned to `=VERSION`, `cargo update` of candle-core and
# candle-nn, then `cargo test -p candle-rmsnorm` in target/candle-VERSION (kept for reruns).
# The same resolution a client gets with
#   cargo update -p candle-core@<newest> --precise VERSION   (and the same for candle-nn).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || { echo "usage: $0 VERSION..." >&2; exit 2; }
for v in "$@"; do
  W=$(mktemp -d)
  trap 'rm -rf "$W"' EXIT
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf -) | tar -xf - -C "$W"
  sed -i -E "s/^(candle-(core|nn)) = \".*\"$/\1 = \"=$v\"/" "$W/Cargo.toml"
  grep -E '^candle-(core|nn) = ' "$W/Cargo.toml"
  (cd "$W" && cargo update -q -p candle-core -p candle-nn)
  echo "== Candle $v: $(grep -A1 'name = "candle-core"' "$W/Cargo.lock" | tail -n1)"
  (cd "$W" && CARGO_TARGET_DIR="$ROOT/target/candle-$v" cargo test -q -p candle-rmsnorm)
  rm -rf "$W"
  trap - EXIT
done
