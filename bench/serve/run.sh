#!/usr/bin/env bash
# Serving speed, side by side in one run, on this machine:
#   (a) predict-buy serve with a 100-tree depth-6 gradient-boosting model,
#   (b) a bare axum handler returning a constant (crates/serve/examples/bare_axum.rs),
#   (c) a FastAPI + scikit-learn stand-in for the original service (fastapi_app.py).
# Closed loop: wrk, 64 connections, from 127.0.0.1 on the same cores as the server
# (throughput at saturation; latency there is connections / throughput).
# Open loop: examples/open_loop.rs at a fixed RATE below saturation, 64 connections,
# latency counted from each request's due time (no coordinated omission).
# Pinned: (a) and (b) again with the server on core 1 and the loader on core 0.
# Sweep: the open loop again at lower rates (SWEEP, default "5000 10000 15000"), for
# p99 against offered load.
# Usage: bench/serve/run.sh [SECONDS] [RUNS] [RATE]   (defaults: 10 s, 3 runs, 20000/s)
# PINNED_ONLY=1 runs only the request-path goal: predict-buy and bare axum, each pinned
# to core 1 with wrk on core 0, RUNS interleaved rounds of c=64 (req/s) and c=8 (p99);
# prints the medians and ours/bare-axum. MODEL=path serves that artifact (say, the
# seed-config model) instead of the 100-tree depth-6 model trained here.
# PREDICT_BUY_BIN=path/to/predict-buy serves instead of this tree's release build (to
# compare two versions of the server in the same conditions); BARE_AXUM_BIN=path is
# the bare axum example to use. What is given is not built.
# Prints req/s, p50 and p99 latency (medians over runs), the ratios, and the RSS of
# predict-buy serve; writes the same to bench/out/serve.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-10}
runs=${2:-3}
rate=${3:-20000}
connections=64
model_arg=${MODEL:+$(realpath "$MODEL")}
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
if [ "${PINNED_ONLY:-0}" = 1 ]; then
  py=python3 # the pinned mode runs no FastAPI
elif [ ! -x "$py" ] || ! "$py" -c "import fastapi, uvicorn, sklearn, pandas" 2>/dev/null; then
  python3 -m venv "$root/bench/.venv"
  "$root/bench/.venv/bin/pip" install -q fastapi uvicorn scikit-learn pandas
fi

# Build only what is not given: under /work/tools/bench-quiet a compile would run in
# the quiet window itself.
if [ -z "${PREDICT_BUY_BIN:-}" ]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p predict-buy --bin predict-buy
fi
if [ -z "${BARE_AXUM_BIN:-}" ] || [ "${PINNED_ONLY:-0}" != 1 ]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p predict-buy-serve --example bare_axum --example open_loop
fi
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
pb=$(realpath "${PREDICT_BUY_BIN:-$target/release/predict-buy}")
bare=$(realpath "${BARE_AXUM_BIN:-$target/release/examples/bare_axum}")
open_loop="$target/release/examples/open_loop"
cores=$(nproc)

pinned_only() { # model
  taskset -c 1 "$pb" serve --model "$1" --addr 127.0.0.1:8094 2>"$work/pb-pinned.log" &
  pids+=($!); local pb_pid=$!
  taskset -c 1 "$bare" 127.0.0.1:8095 2>"$work/bare-pinned.log" &
  pids+=($!)
  local port
  for port in 8094 8095; do
    for _ in $(seq 1 600); do
      curl -fs -o /dev/null -H 'content-type: application/json' -d @- "http://127.0.0.1:$port/predict" \
        <<<'{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}' && break
      sleep 0.1
    done
    taskset -c 0 wrk -t1 -c$connections -d2s -s "$here/post.lua" "http://127.0.0.1:$port/predict" >/dev/null
  done
  local round side name
  for round in $(seq 1 "$runs"); do
    for side in predict-buy:8094 bare-axum:8095; do
      name=${side%%:*}; port=${side##*:}
      taskset -c 0 wrk -t1 -c$connections -d"${seconds}s" --latency -s "$here/post.lua" "http://127.0.0.1:$port/predict" >"$work/c64.txt"
      taskset -c 0 wrk -t1 -c8 -d"${seconds}s" --latency -s "$here/post.lua" "http://127.0.0.1:$port/predict" >"$work/c8.txt"
      echo "$name $("$py" "$here/parse_wrk.py" x "$work/c64.txt" | cut -d' ' -f2) $("$py" "$here/parse_wrk.py" x "$work/c8.txt" | cut -d' ' -f3-)" | tee -a "$work/pinned" >&2
    done
  done
  local rss_kb trees
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pb_pid/status")
  trees=$(curl -fs http://127.0.0.1:8094/model | "$py" -c 'import json,sys; t=json.load(sys.stdin)["training"]; print(t.get("n_trees"), "trees")')
  "$py" - "$work/pinned" "$runs" "$seconds" "$rss_kb" "$trees" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
path, runs, secs, rss, trees, load = sys.argv[1:]
rows = {}
for line in open(path):
    name, rps, p50, p99, bad, errs = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), int(bad), errs))
med = lambda n, i: statistics.median(r[i] for r in rows[n])
print(f"pinned: server core 1, wrk -t1 core 0; {runs} interleaved rounds of {secs} s; model: {trees}; load average at the end {load}")
for n in ("predict-buy", "bare-axum"):
    print(f"  {n:<12} c64 {med(n, 0):>9,.0f} req/s ({', '.join(f'{r[0]:.0f}' for r in rows[n])}); "
          f"c8 p50 {med(n, 1):.3f} ms, p99 {med(n, 2):.3f} ms; non-2xx {sum(r[3] for r in rows[n])}")
print(f"  predict-buy / bare axum: {med('predict-buy', 0) / med('bare-axum', 0):.2f}x (goal >= 0.75x); "
      f"c8 p99 {med('predict-buy', 2):.3f} ms (goal < 1 ms); RSS {int(rss) / 1024:.1f} MB")
PY
}

cd "$work"
if [ -n "$model_arg" ] && [ "${PINNED_ONLY:-0}" = 1 ]; then
  pinned_only "$model_arg"
  exit 0
fi
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
model="${model_arg:-$work/models/model.pbm}"
if [ "${PINNED_ONLY:-0}" = 1 ]; then
  pinned_only "$model"
  exit 0
fi

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
if [ "$cores" -ge 2 ]; then
  # One core each for server and loader; tokio sizes its pool to the one core.
  taskset -c 1 "$pb" serve --model "$model" --addr 127.0.0.1:8094 2>"$work/pb-pinned.log" &
  pids+=($!)
  taskset -c 1 "$bare" 127.0.0.1:8095 2>"$work/bare-pinned.log" &
  pids+=($!)
  wait_up http://127.0.0.1:8094/readyz
fi
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

bench() { # name port [connections] [loader cpus] -> appends "name rps p50_ms p99_ms non2xx socket_errors" to results
  local file="$work/wrk-$1-$(date +%s%N).txt" c=${3:-$connections} cpus=${4:-}
  local threads=2 pin=()
  if [ -n "$cpus" ]; then threads=1; pin=(taskset -c "$cpus"); fi
  "${pin[@]}" wrk -t"$threads" -c"$c" -d"${seconds}s" --latency -s "$here/post.lua" "http://127.0.0.1:$2/predict" >"$file"
  "$py" "$here/parse_wrk.py" "$1" "$file" >>"$work/results"
}
open_bench() { # name port [loader cpus] [rate] -> the same columns, at $rate requests/s
  local pin=()
  if [ -n "${3:-}" ]; then pin=(taskset -c "$3"); fi
  read -r _sent answered p50 _p90 p99 _p999 _max errors late < <("${pin[@]}" "$open_loop" "127.0.0.1:$2" "${4:-$rate}" "$connections" "$seconds")
  echo "$1 $answered $p50 $p99 $errors late=$late%" >>"$work/results"
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
# Latency below saturation: open loop at a fixed rate, 64 connections.
for run in $(seq 1 "$runs"); do
  open_bench predict-buy@open 8091
  open_bench bare-axum@open 8092
done
for r in ${SWEEP:-5000 10000 15000}; do
  for run in $(seq 1 "$runs"); do
    open_bench "predict-buy@sweep$r" 8091 "" "$r"
    open_bench "bare-axum@sweep$r" 8092 "" "$r"
  done
done
if [ "$cores" -ge 2 ]; then
  wrk -t1 -c$connections -d2s -s "$here/post.lua" http://127.0.0.1:8094/predict >/dev/null
  wrk -t1 -c$connections -d2s -s "$here/post.lua" http://127.0.0.1:8095/predict >/dev/null
  for run in $(seq 1 "$runs"); do
    bench predict-buy@pinned 8094 "$connections" 0
    bench bare-axum@pinned 8095 "$connections" 0
    open_bench predict-buy@pinned-open 8094 0
    open_bench bare-axum@pinned-open 8095 0
  done
fi
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pb_pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pb_pid/status")
trees=$(curl -fs http://127.0.0.1:8091/model | "$py" -c 'import json,sys; print(json.load(sys.stdin)["training"]["n_trees"])')

mkdir -p "$root/bench/out"
load=$(cut -d' ' -f1-3 /proc/loadavg)
"$py" - "$work/results" "$rss_kb" "$hwm_kb" "$trees" "$seconds" "$runs" "$connections" "$rate" "$load" <<'PY' | tee "$root/bench/out/serve.md"
import statistics, sys
path, rss, hwm, trees, seconds, runs, conns, rate, load = sys.argv[1:]
rows = {}
for line in open(path):
    name, rps, p50, p99, bad, sockerr = line.split()
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), int(bad), sockerr))
late = {n: ", ".join(r[4].removeprefix("late=") for r in v) for n, v in rows.items() if v[0][4].startswith("late=")}
med = {n: tuple(statistics.median(r[i] for r in v) for i in range(3)) + (sum(r[3] for r in v),) for n, v in rows.items()}
print(f"{runs} runs of {seconds} s each, medians; model: {trees} trees, depth 6; load average at the end {load}\n")
print("| server | load | req/s | p50 (ms) | p99 (ms) | non-2xx / errors | req/s of each run (open loop: loader late %) |")
print("|---|---|---:|---:|---:|---:|---|")
label = {
    "": f"wrk -t2 -c{conns}, shared cores",
    "@8": "wrk -t2 -c8, shared cores",
    "@open": f"open loop {int(rate):,}/s, {conns} conns, shared cores",
    "@pinned": f"wrk -t1 -c{conns}, server core 1, wrk core 0",
    "@pinned-open": f"open loop {int(rate):,}/s, {conns} conns, server core 1, loader core 0",
}
order = ["predict-buy", "bare-axum", "fastapi"] + [s + v for v in ["@8", "@open", "@pinned", "@pinned-open"] for s in ["predict-buy", "bare-axum"]]
for n in order:
    if n not in med:
        continue
    rps, p50, p99, bad = med[n]
    server, _, variant = n.partition("@")
    variant = "@" + variant if variant else ""
    each = ", ".join(f"{r[0]:.0f}" for r in rows[n])
    if n in late:
        each += f" (late {late[n]})"
    print(f"| {server} | {label[variant]} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {bad} | {each} |")
ours, bare, fast = med["predict-buy"][0], med["bare-axum"][0], med["fastapi"][0]
print()
print(f"- predict-buy / FastAPI: {ours / fast:,.0f}x (goal >= 100x)")
print(f"- predict-buy / bare axum: {100 * ours / bare:.0f}% (goal >= 60%)")
print(f"- predict-buy p99: {med['predict-buy'][2]:.3f} ms at {conns} connections closed loop, {med['predict-buy@8'][2]:.3f} ms at 8, {med['predict-buy@open'][2]:.3f} ms open loop at {int(rate):,}/s (goal < 1 ms at 64)")
if "predict-buy@pinned" in med:
    print(f"- pinned: predict-buy / bare axum {100 * med['predict-buy@pinned'][0] / med['bare-axum@pinned'][0]:.0f}%; p99 {med['predict-buy@pinned'][2]:.3f} ms closed loop, {med['predict-buy@pinned-open'][2]:.3f} ms open loop")
sweep = sorted({int(n.split("@sweep")[1]) for n in med if "@sweep" in n} | {int(rate)})
print()
print(f"p99 against offered load (open loop, {conns} connections, shared cores; medians):\n")
print("| requests/s | predict-buy p50 / p99 (ms) | bare axum p50 / p99 (ms) |")
print("|---:|---:|---:|")
for r in sweep:
    v = "@open" if r == int(rate) else f"@sweep{r}"
    a, b = med.get("predict-buy" + v), med.get("bare-axum" + v)
    if a and b:
        print(f"| {r:,} | {a[1]:.3f} / {a[2]:.3f} | {b[1]:.3f} / {b[2]:.3f} |")
print()
print(f"- predict-buy RSS after the runs: {int(rss) / 1024:.1f} MB, peak {int(hwm) / 1024:.1f} MB (goal < 30 MB)")
PY
