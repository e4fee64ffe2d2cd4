#!/usr/bin/env bash
# Shadow overhead: one `predict-buy serve` following a registry environment, measured
# with and without a shadow of another release (`shadow start` / `shadow stop` between
# rounds), in interleaved rounds so both sides see the same machine. The server is
# pinned to core 1, wrk to core 0; the shadow's worker thread shares the server's core,
# so the scoring it does off the response path still competes for that core.
# Per round: p50 and p99 at 1 connection (the response path alone) and at 8, and req/s
# at 8. The issue's bar is p50 overhead under 20%.
#   bench/serve/shadow.sh [ROUNDS] [SECONDS]   (defaults: 5 rounds, 5 s)
# PREDICT_BUY_BIN=path/to/predict-buy measures that binary instead of this tree's
# release build.
set -euo pipefail
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lua="$here/post.lua"
rounds=${1:-5}
secs=${2:-5}
if [ -z "${PREDICT_BUY_BIN:-}" ]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p predict-buy --bin predict-buy
  target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  PREDICT_BUY_BIN="$target/release/predict-buy"
fi
pb=$(realpath "$PREDICT_BUY_BIN")
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
port=8131

"$pb" data synth --rows 60000 --seed 5 --out data >/dev/null 2>&1
for seed in 42 43; do
  cat > train-$seed.yml <<YML
data: {train_path: data/train.csv, test_path: data/test.csv}
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 100, max_depth: 6, learning_rate: 0.1, random_state: $seed}
  store_path: models/
YML
  "$pb" train --config train-$seed.yml --out model-$seed.pbm >/dev/null 2>&1
done
cat > predict-buy.yaml <<YML
registry: file://.predict-buy/registry
require_git_tag: false
environments:
  nonprod:
    branch: develop
    target: local
    endpoints: [http://127.0.0.1:$port]
YML
"$pb" release create v1.0.0 --model model-42.pbm --allow-unversioned-data >/dev/null 2>&1
"$pb" release create v1.1.0 --model model-43.pbm --allow-unversioned-data >/dev/null 2>&1
taskset -c 1 "$pb" serve --registry .predict-buy/registry --env nonprod --addr 127.0.0.1:$port \
  --poll-interval 200ms 2>serve.log &
"$pb" deploy v1.0.0 --env nonprod --yes >/dev/null 2>&1
sample='{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}'
echo "answer: $(curl -fs -H 'content-type: application/json' -d "$sample" "http://127.0.0.1:$port/predict")"
taskset -c 0 wrk -t1 -c8 -d2s -s "$lua" "http://127.0.0.1:$port/predict" >/dev/null
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"

ms() { # wrk latency → ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; print n }'
}
measure() { # name
  taskset -c 0 wrk -t1 -c1 -d"${secs}s" --latency -s "$lua" "http://127.0.0.1:$port/predict" >c1.txt
  taskset -c 0 wrk -t1 -c8 -d"${secs}s" --latency -s "$lua" "http://127.0.0.1:$port/predict" >c8.txt
  local bad
  bad=$( (grep -h 'Non-2xx\|Socket errors' c1.txt c8.txt || true) | wc -l)
  echo "$1 $(ms "$(awk '$1 == "50%" {print $2}' c1.txt)") $(ms "$(awk '$1 == "99%" {print $2}' c1.txt)") \
$(ms "$(awk '$1 == "50%" {print $2}' c8.txt)") $(ms "$(awk '$1 == "99%" {print $2}' c8.txt)") \
$(awk '/Requests\/sec/ {print $2}' c8.txt) $bad" | tee -a rounds.txt
}
echo "side c1_p50_ms c1_p99_ms c8_p50_ms c8_p99_ms c8_req_s error_lines"
for round in $(seq "$rounds"); do
  measure plain
  "$pb" shadow start v1.1.0 --env nonprod >/dev/null 2>&1
  measure shadow
  "$pb" shadow report --env nonprod --json > report-$round.json
  "$pb" shadow stop --env nonprod >/dev/null 2>&1
done
python3 - "$work/rounds.txt" "$work/report-$rounds.json" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(side, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == side)
print("medians over rounds:")
for col, name in [(1, "c1 p50"), (2, "c1 p99"), (3, "c8 p50"), (4, "c8 p99"), (5, "c8 req/s")]:
    p, s = med("plain", col), med("shadow", col)
    print(f"  {name:9} plain {p:10.3f}  shadow {s:10.3f}  shadow/plain {s / p:5.2f}")
r = json.load(open(sys.argv[2]))
print(f"last round's shadow: {r['compared']} compared, {r['skipped']} skipped, "
      f"shadow errors {r['shadow']['errors'] if r['shadow'] else 'n/a'}")
PY
