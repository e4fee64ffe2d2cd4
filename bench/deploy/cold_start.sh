#!/usr/bin/env bash
# Cold start of a pinned server (issue 13: what a Kubernetes pod does before it is
# ready): from exec of `predict-buy serve --release TAG --model-digest D` to the first
# 200 from /readyz, pulling a 100-tree forest from a file:// registry, and from the
# registry tests' S3 server (s3s over HTTP on 127.0.0.1, run as a process of its own).
# Prints the minimum, median and maximum over RUNS starts of each, and the CPU.
#
#   bench/deploy/cold_start.sh [RUNS]        (default 20)
#   PREDICT_BUY_BIN=path/to/predict-buy PREDICT_BUY_S3_SERVER=path/to/s3_server \
#     bench/deploy/cold_start.sh             (skip the builds)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-20}"
BIN="${PREDICT_BUY_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release -q -p predict-buy
  BIN="$PWD/target/release/predict-buy"
fi
S3_SERVER="${PREDICT_BUY_S3_SERVER:-}"
if [ -z "$S3_SERVER" ]; then
  cargo build --release -q -p predict-buy-registry --example s3_server
  S3_SERVER="$PWD/target/release/examples/s3_server"
fi
BIN="$(realpath "$BIN")"
S3_SERVER="$(realpath "$S3_SERVER")"
WORK="$(mktemp -d)"
S3_PID=""
trap '[ -n "$S3_PID" ] && kill "$S3_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
"$BIN" data synth --rows 50000 --seed 1 --out data >/dev/null 2>&1
cat > forest.yml <<'YAML'
data: {train_path: data/train.csv, test_path: data/test.csv}
model:
  name: RandomForestClassifier
  params: {n_estimators: 100, max_depth: 12, random_state: 1}
  store_path: models/
YAML
"$BIN" train --config forest.yml --out models/forest.pbm >/dev/null 2>&1
FILE_REG="file://$WORK/registry"
"$BIN" release create v1.0.0 --model models/forest.pbm --allow-unversioned-data --registry "$FILE_REG" >/dev/null 2>&1
DIGEST=$("$BIN" release show v1.0.0 --registry "$FILE_REG" --json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["model_digest"])')

"$S3_SERVER" "$WORK/s3" "$WORK/s3.addr" >/dev/null &
S3_PID=$!
for _ in $(seq 200); do [ -s "$WORK/s3.addr" ] && break; sleep 0.05; done
AWS_ENDPOINT_URL="$(cat "$WORK/s3.addr")"
export AWS_ENDPOINT_URL AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=predict-buy-test AWS_SECRET_ACCESS_KEY=predict-buy-test-secret
S3_REG="s3://models/team/registry"
"$BIN" release create v1.0.0 --model models/forest.pbm --allow-unversioned-data --registry "$S3_REG" >/dev/null

echo "model: $(du -h models/forest.pbm | cut -f1) artifact, 100 trees of depth ≤ 12 ($DIGEST)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | xargs)"
python3 - "$BIN" "$DIGEST" "$RUNS" "$FILE_REG" "$S3_REG" <<'PY'
import os, statistics, subprocess, sys, tempfile, time, urllib.request

bin_, digest, runs, registries = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]


def cold_start(reg):
    folder = tempfile.mkdtemp()
    addr_file = os.path.join(folder, "addr")
    start = time.perf_counter()
    server = subprocess.Popen(
        [bin_, "serve", "--registry", reg, "--release", "v1.0.0", "--model-digest", digest,
         "--addr", "127.0.0.1:0", "--addr-file", addr_file],
        stderr=subprocess.DEVNULL)
    addr = None
    try:
        while True:
            if addr is None and os.path.exists(addr_file):
                addr = open(addr_file).read().strip() or None
            if addr:
                try:
                    with urllib.request.urlopen(f"http://{addr}/readyz", timeout=1) as r:
                        if r.status == 200:
                            return (time.perf_counter() - start) * 1000
                except OSError:
                    pass
            if server.poll() is not None:
                sys.exit(f"serve --registry {reg} exited with {server.returncode}")
            if time.perf_counter() - start > 30:
                sys.exit(f"serve --registry {reg}: not ready within 30 s")
            time.sleep(0.0005)
    finally:
        server.terminate()
        server.wait()


# Interleaved, so both registries see the same machine load.
times = {reg: [] for reg in registries}
for _ in range(runs):
    for reg in registries:
        times[reg].append(cold_start(reg))
for reg, ts in times.items():
    print(f"{reg.split(':')[0]:>4}: exec → /readyz 200 over {runs} starts: min {min(ts):.1f} ms, "
          f"median {statistics.median(ts):.1f} ms, max {max(ts):.1f} ms (goal: < 150 ms)")
PY
