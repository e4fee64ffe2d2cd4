#!/usr/bin/env bash
# Two builds of the server side by side, for a before/after check of a change: the same
# model (trained by OLD, so a newer NEW that still loads older artifacts serves it too),
# each server pinned to core 1 and wrk to core 0, in interleaved rounds so both see the
# same machine. Per round: req/s at 64 connections, p50 and p99 at 8.
#   bench/serve/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]   (defaults: 5 rounds, 5 s)
# MODEL=path serves that artifact (say, the seed-config model) instead of training a
# 100-tree depth-6 model with OLD. Prints the medians per side and new/old at the end.
set -euo pipefail
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
lua="$(cd "$(dirname "$0")" && pwd)/post.lua"
old=$(realpath "$1")
new=$(realpath "$2")
rounds=${3:-5}
secs=${4:-5}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
model=${MODEL:+$(realpath "$MODEL")}
cd "$work"

if [ -n "$model" ]; then
  ln -s "$model" model.pbm
else
"$old" data synth --rows 60000 --seed 5 --out data >/dev/null 2>&1
cat > train.yml <<YML
data: {train_path: data/train.csv, test_path: data/test.csv}
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 100, max_depth: 6, learning_rate: 0.1, random_state: 42}
  store_path: models/
YML
"$old" train --config train.yml --out model.pbm >/dev/null 2>&1
fi
taskset -c 1 "$old" serve --model model.pbm --addr 127.0.0.1:8101 2>old.log &
taskset -c 1 "$new" serve --model model.pbm --addr 127.0.0.1:8102 2>new.log &
sample='{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}'
for port in 8101 8102; do
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  echo "port $port: $(curl -fs -H 'content-type: application/json' -d "$sample" "http://127.0.0.1:$port/predict")"
  taskset -c 0 wrk -t1 -c64 -d2s -s "$lua" "http://127.0.0.1:$port/predict" >/dev/null
done
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | xargs)"
for round in $(seq "$rounds"); do
  for side in old:8101 new:8102; do
    name=${side%%:*}
    port=${side##*:}
    taskset -c 0 wrk -t1 -c64 -d"${secs}s" --latency -s "$lua" "http://127.0.0.1:$port/predict" >c64.txt
    taskset -c 0 wrk -t1 -c8 -d"${secs}s" --latency -s "$lua" "http://127.0.0.1:$port/predict" >c8.txt
    rps=$(awk '/Requests\/sec/ {print $2}' c64.txt)
    p50=$(awk '$1 == "50%" {print $2}' c8.txt)
    p99=$(awk '$1 == "99%" {print $2}' c8.txt)
    bad=$( (grep -h 'Non-2xx\|Socket errors' c64.txt c8.txt || true) | wc -l)
    echo "$name round $round: c64 $rps req/s; c8 p50 $p50, p99 $p99; lines reporting errors: $bad" | tee -a rounds.txt
  done
done
python3 - rounds.txt "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import re, statistics, sys
ms = lambda v: float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-2]) if v.endswith("ms") else float(v[:-1]) * 1000
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) round \d+: c64 ([\d.]+) req/s; c8 p50 (\S+), p99 (\S+);", line)
    rows.setdefault(m[1], []).append((float(m[2]), ms(m[3].rstrip(",")), ms(m[4])))
med = {n: [statistics.median(r[i] for r in v) for i in range(3)] for n, v in rows.items()}
for n, (rps, p50, p99) in med.items():
    print(f"{n} median: c64 {rps:,.0f} req/s; c8 p50 {p50:.3f} ms, p99 {p99:.3f} ms")
print(f"new / old: {med['new'][0] / med['old'][0]:.3f}x; load average at the end {sys.argv[2]}")
PY
