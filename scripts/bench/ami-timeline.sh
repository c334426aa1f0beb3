#!/usr/bin/env bash
# Where one AMI build's time goes: the build of scripts/bench/ami-vs-packer.sh
# (moto on loopback, the same template), once, under strace, and per AWS call
# the time it was sent and answered (ms since kiln started), with every
# fsync and child process. strace slows kiln down: read the order and the
# overlaps, not the absolute figures (ami-vs-packer.sh measures those).
#   scripts/bench/ami-timeline.sh [KILN_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v strace >/dev/null || { echo "needs strace (Debian package strace)" >&2; exit 1; }
kiln=$(realpath "${1:-target/release/kiln}")
. scripts/bench/ami-common.sh
start_moto
ami_template "$dir/kiln.toml" "$endpoint" 'ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*'
# One untimed build first (moto imports its EC2 code on first use), then a
# fresh moto account for the traced one; kiln's catalog key and fingerprint
# secret are kept, as ami-vs-packer.sh keeps them.
(cd "$dir" && KILN_STATE_DIR="$dir/state" NO_COLOR=1 "$kiln" build kiln.toml > "$dir/kiln.log" 2>&1) ||
  { cat "$dir/kiln.log"; exit 1; }
curl -sf -X POST "$endpoint/moto-api/reset" >/dev/null
find "$dir/state" -mindepth 1 -maxdepth 1 ! -name keys ! -name catalog -exec rm -rf {} +
find "$dir/state/catalog" -mindepth 1 -maxdepth 1 ! -name fingerprint.key -exec rm -rf {} +
(cd "$dir" && KILN_STATE_DIR="$dir/state" NO_COLOR=1 strace -f -tt -T -s 300 \
  -e trace=connect,writev,recvfrom,fsync,execve,exit_group -o "$dir/strace.txt" \
  "$kiln" build kiln.toml > "$dir/kiln.log" 2>&1) || { cat "$dir/kiln.log"; exit 1; }
python3 - "$dir/strace.txt" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
def at(l):
    m = re.match(r'\d+\s+(\d+):(\d+):(\d+\.\d+)', l)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None
t0 = at(lines[0])
rows = []
sent = {}
waiting = {}  # pid -> fd of a recvfrom strace shows cut in two
last = 0.0
for l in lines:
    t = at(l)
    if t is None:
        continue
    ms = (t - t0) * 1000
    pid = l.split()[0]
    action = re.search(r'Action=(\w+)', l)
    if action and 'writev(' in l:
        sent[re.search(r'writev\((\d+)', l)[1]] = (action[1], ms)
        continue
    cut = re.search(r'recvfrom\((\d+), <unfinished', l)
    if cut:
        waiting[pid] = cut[1]
        continue
    answer = re.search(r'recvfrom\((\d+), "HTTP/1.1 (\d+)', l)
    resumed = re.search(r'recvfrom resumed>"HTTP/1.1 (\d+)', l)
    if resumed and pid in waiting:
        answer = (None, waiting.pop(pid), resumed[1])
    if answer and answer[1] in sent:
        what, start = sent.pop(answer[1])
        rows.append((start, f"{start:8.1f} -> {ms:8.1f} ms  {what} (HTTP {answer[2]}, {ms - start:.1f} ms)"))
    elif 'fsync(' in l and 'resumed' not in l:
        rows.append((ms, f"{ms:8.1f}             fsync"))
    elif 'execve(' in l and '= 0' in l:
        rows.append((ms, f"{ms:8.1f}             exec {l.split('execve(')[1].split(',')[0]}"))
    elif 'exit_group' in l:
        last = ms
for _, row in sorted(rows):
    print(row)
print(f"{last:8.1f}             exit")
PY
