#!/usr/bin/env bash
# Serving speed, side by side in one run, on this machine:
#   (a) predict-buy serve with a 100-tree depth-6 gradient-boosting model,
#   (b) a bare axum handler returning a constant (crates/serve/examples/bare_axum.rs),
#   (c) a FastAPI + scikit-learn stand-in for the original service (fastapi_app.py).
# Load: wrk, 64 connections, from 127.0.0.1 on the same cores as the server.
# Usage: bench/serve/run.sh [SECONDS] [RUNS]   (defaults: 10 s, 3 runs each)
# Prints req/s, p50 and p99 latency (medians over runs), the ratios, and the RSS of
# predict-buy serve; writes the same to bench/out/serve.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-10}
runs=${2:-3}
connections=64
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
py="$root/bench/.venv/bin/python"
if [ ! -x "$py" ] || ! "$py" -c "import fastapi, uvicorn, sklearn, pandas" 2>/dev/null; then
  python3 -m venv "$root/bench/.venv"
  "$root/bench/.venv/bin/pip" install -q fastapi uvicorn scikit-learn pandas
fi

cargo build --release -q --manifest-path "$root/Cargo.toml" -p predict-buy --bin predict-buy
cargo build --release -q --manifest-path "$root/Cargo.toml" -p predict-buy-serve --example bare_axum
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
pb="$target/release/predict-buy"
bare="$target/release/examples/bare_axum"

cd "$work"
"$pb" data synth --rows 60000 --seed 5 --out data >/dev/null 2>&1
cat > train.yml <<YML
data:
  train_path: data/train.csv
  test_path: data/test.csv
  target: Result
  columns:
    id: {role: drop}
    VehicleAge: {role: drop}
    SalesChannelID: {role: drop}
    DaysSinceCreated: {role: drop}
    Gender: {type: categorical, impute: most_frequent}
    Age: {type: numeric, impute: median, min: 0, max: 120}
    HasDrivingLicense: {type: numeric, impute: constant, fill_value: 1}
    RegionID: {type: numeric, impute: most_frequent, min: 0}
    Switch: {type: numeric, impute: constant, fill_value: -1}
    PastAccident: {type: categorical, impute: constant, fill_value: Unknown}
    AnnualPremium: {type: numeric, parse: currency, impute: median, outliers: iqr, min: 0}
model:
  name: GradientBoostingClassifier
  params: {n_estimators: 100, max_depth: 6, learning_rate: 0.1, random_state: 42}
  store_path: models/
YML
"$pb" train --config train.yml >/dev/null 2>&1
model="$work/models/model.pbm"

wait_up() { # url
  for _ in $(seq 1 600); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not come up" >&2; exit 1
}

"$pb" serve --model "$model" --addr 127.0.0.1:8091 2>"$work/pb.log" &
pids+=($!); pb_pid=$!
"$bare" 127.0.0.1:8092 2>"$work/bare.log" &
pids+=($!)
"$py" "$here/fastapi_app.py" data/train.csv 8093 2>"$work/fastapi.log" &
pids+=($!)
wait_up http://127.0.0.1:8091/readyz
wait_up http://127.0.0.1:8093/
sleep 0.5

# Every server answers the same sample request.
for port in 8091 8092 8093; do
  curl -fs -H 'content-type: application/json' \
    -d '{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}' \
    "http://127.0.0.1:$port/predict" >"$work/answer-$port.json"
  echo "port $port: $(cat "$work/answer-$port.json")" >&2
done

bench() { # name port [connections] -> appends "name rps p50_ms p99_ms non2xx socket_errors" to results
  local file="$work/wrk-$1-$(date +%s%N).txt" c=${3:-$connections}
  wrk -t2 -c"$c" -d"${seconds}s" --latency -s "$here/post.lua" "http://127.0.0.1:$2/predict" >"$file"
  "$py" "$here/parse_wrk.py" "$1" "$file" >>"$work/results"
}

# Warm up, then interleave the targets so each run sees the same machine.
wrk -t2 -c$connections -d2s -s "$here/post.lua" http://127.0.0.1:8091/predict >/dev/null
wrk -t2 -c$connections -d2s -s "$here/post.lua" http://127.0.0.1:8092/predict >/dev/null
wrk -t2 -c$connections -d2s -s "$here/post.lua" http://127.0.0.1:8093/predict >/dev/null
for run in $(seq 1 "$runs"); do
  echo "run $run/$runs" >&2
  bench predict-buy 8091
  bench bare-axum 8092
  bench fastapi 8093
done
# Latency at light load: the same servers at 8 connections.
for run in $(seq 1 "$runs"); do
  bench predict-buy@8 8091 8
  bench bare-axum@8 8092 8
done
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pb_pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pb_pid/status")
trees=$(curl -fs http://127.0.0.1:8091/model | "$py" -c 'import json,sys; print(json.load(sys.stdin)["training"]["n_trees"])')

mkdir -p "$root/bench/out"
"$py" - "$work/results" "$rss_kb" "$hwm_kb" "$trees" "$seconds" "$runs" "$connections" <<'PY' | tee "$root/bench/out/serve.md"
import statistics, sys
path, rss, hwm, trees, seconds, runs, conns = sys.argv[1:]
rows = {}
for line in open(path):
    name, rps, p50, p99, bad, sockerr = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), int(bad), sockerr))
med = {n: tuple(statistics.median(r[i] for r in v) for i in range(3)) + (sum(r[3] for r in v),) for n, v in rows.items()}
print(f"{runs} runs of {seconds} s each, wrk -t2 -c{conns}, medians; model: {trees} trees, depth 6\n")
print("| server (@8: 8 connections) | req/s | p50 (ms) | p99 (ms) | non-2xx | req/s of each run |")
print("|---|---:|---:|---:|---:|---|")
for n in ["predict-buy", "bare-axum", "fastapi", "predict-buy@8", "bare-axum@8"]:
    rps, p50, p99, bad = med[n]
    each = ", ".join(f"{r[0]:.0f}" for r in rows[n])
    print(f"| {n} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {bad} | {each} |")
ours, bare, fast = med["predict-buy"][0], med["bare-axum"][0], med["fastapi"][0]
print()
print(f"- predict-buy / FastAPI: {ours / fast:,.0f}x (goal >= 100x)")
print(f"- predict-buy / bare axum: {100 * ours / bare:.0f}% (goal >= 60%)")
print(f"- predict-buy p99: {med['predict-buy'][2]:.3f} ms at {conns} connections, {med['predict-buy@8'][2]:.3f} ms at 8 (goal < 1 ms at 64)")
print(f"- predict-buy RSS after the runs: {int(rss) / 1024:.1f} MB, peak {int(hwm) / 1024:.1f} MB (goal < 30 MB)")
PY
