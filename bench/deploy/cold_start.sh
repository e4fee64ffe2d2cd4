#!/usr/bin/env bash
# Cold start of a pinned server (issue 13: what a Kubernetes pod does before it is
# ready): from exec of `predict-buy serve --release TAG --model-digest D` to the first
# 200 from /readyz, pulling a 100-tree forest from a file:// registry. Prints the
# minimum, median and maximum over RUNS starts, and the CPU.
#
#   bench/deploy/cold_start.sh [RUNS]        (default 20)
#   PREDICT_BUY_BIN=path/to/predict-buy bench/deploy/cold_start.sh   (skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-20}"
BIN="${PREDICT_BUY_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release -q -p predict-buy
  BIN="$PWD/target/release/predict-buy"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
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
REG="file://$WORK/registry"
"$BIN" release create v1.0.0 --model models/forest.pbm --registry "$REG" >/dev/null 2>&1
DIGEST=$("$BIN" release show v1.0.0 --registry "$REG" --json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["model_digest"])')
echo "model: $(du -h models/forest.pbm | cut -f1) artifact, 100 trees of depth ≤ 12 ($DIGEST)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); avx512: $(grep -q avx512f /proc/cpuinfo && echo yes || echo no)"
python3 - "$BIN" "$REG" "$DIGEST" "$RUNS" <<'PY'
import os, statistics, subprocess, sys, tempfile, time, urllib.request

bin_, reg, digest, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = []
for _ in range(runs):
    folder = tempfile.mkdtemp()
    addr_file = os.path.join(folder, "addr")
    start = time.perf_counter()
    server = subprocess.Popen(
        [bin_, "serve", "--registry", reg, "--release", "v1.0.0", "--model-digest", digest,
         "--addr", "127.0.0.1:0", "--addr-file", addr_file],
        stderr=subprocess.DEVNULL)
    addr = None
    while True:
        if addr is None and os.path.exists(addr_file):
            addr = open(addr_file).read().strip() or None
        if addr:
            try:
                with urllib.request.urlopen(f"http://{addr}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
        if time.perf_counter() - start > 30:
            server.kill()
            sys.exit("not ready within 30 s")
        time.sleep(0.0005)
    times.append((time.perf_counter() - start) * 1000)
    server.terminate()
    server.wait()
print(f"exec → /readyz 200 over {runs} starts: min {min(times):.1f} ms, "
      f"median {statistics.median(times):.1f} ms, max {max(times):.1f} ms (goal: < 150 ms)")
PY
