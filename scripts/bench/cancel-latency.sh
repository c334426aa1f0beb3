#!/usr/bin/env bash
# How long `kiln build` takes from SIGINT to exit, with a provisioner
# process running and a journaled workspace to undo. Usage:
#   scripts/bench/cancel-latency.sh [KILN_BINARY] [RUNS]
set -euo pipefail
kiln=${1:-target/release/kiln}
runs=${2:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/t.toml" <<'TOML'
[image]
name = "bench"
version = "1.0.0"
[source.null.a]
[[build]]
sources = ["null.a"]
[[build.provisioner]]
type = "shell"
inline = ["echo ready", "sleep 300"]
TOML
for i in $(seq "$runs"); do
  fifo="$dir/out.$i"; mkfifo "$fifo"
  KILN_STATE_DIR="$dir/state" "$kiln" build --json "$dir/t.toml" > "$fifo" 2>/dev/null &
  pid=$!
  grep -m1 -q '"line":"ready"' < "$fifo" || true
  start=$(date +%s%N)
  kill -INT "$pid"
  wait "$pid" || true
  end=$(date +%s%N)
  left=$(find "$dir/state/journal" -name '*.json' 2>/dev/null | wc -l)
  echo "run $i: $(( (end - start) / 1000000 )) ms from SIGINT to exit, journal entries left: $left"
done
