#!/usr/bin/env bash
# Data versioning benchmark, on this machine:
#   1. `predict-buy data push` of a ~400 MB CSV against `cp` + `sha256sum` of the same
#      file: wall time and peak RSS (/usr/bin/time -v), and `data pull` back;
#   2. `predict-buy release reproduce v0.1.0` of the quickstart's release against
#      `predict-buy train` of the same config: what reproducing costs beyond training.
#
#   bench/data/run.sh [REPEATS] [MB]      (defaults: 5 repeats, 400 MB)
#   PREDICT_BUY_BIN=target/debug/predict-buy bench/data/run.sh
#
# The CSV is synthetic (`data synth` rows repeated until the size is reached); nothing
# from the shared data folder is used. The file is read from the page cache by every
# contender alike. Prints medians; on a shared machine single runs wander.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
repeats=${1:-5}
mb=${2:-400}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# PREDICT_BUY_BIN=path runs an already built binary (e.g. the opt-level-2 one that
# `cargo test` builds in target/debug) instead of building the release one.
if [ -n "${PREDICT_BUY_BIN:-}" ]; then
  pb=$PREDICT_BUY_BIN
else
  cargo build --release -q -p predict-buy --manifest-path "$root/Cargo.toml"
  pb="$root/target/release/predict-buy"
fi
cd "$work"

# ~40 MB of synthetic rows, then their body repeated until the target size is reached
# (whole rows, so the file stays a valid CSV).
"$pb" data synth --rows 500000 --seed 3 --out seed --test-fraction 0.01 >/dev/null 2>&1
tail -n +2 seed/train.csv > body.csv
body=$(stat -c %s body.csv)
copies=$(( (mb * 1024 * 1024 + body - 1) / body ))
{
  head -n 1 seed/train.csv
  for _ in $(seq "$copies"); do cat body.csv; done
} > big.csv
rm -rf seed body.csv
size=$(stat -c %s big.csv)
echo "file: big.csv, $size bytes ($(wc -l < big.csv) lines)"

measure() { # label command...  -> appends "label wall_s peak_kb" to $work/results.txt
  local label=$1; shift
  /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/run.out" 2>"$work/run.err" \
    || { cat "$work/run.err" "$work/run.out"; exit 1; }
  python3 - "$label" "$work/time.txt" >> "$work/results.txt" <<'PY'
import re, sys
text = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
print(sys.argv[1], secs, rss)
PY
}

: > results.txt
for i in $(seq "$repeats"); do
  rm -rf reg copy.csv pulled
  measure "cp+sha256sum" bash -c 'cp big.csv copy.csv && sha256sum copy.csv'
  measure "data-push" "$pb" data push big.csv --registry "file://$work/reg"
  mkdir pulled && cp big.csv.ref.yaml pulled/
  measure "data-pull" "$pb" data pull pulled/big.csv.ref.yaml --registry "file://$work/reg"
  cmp -s big.csv pulled/big.csv || { echo "pulled file differs" >&2; exit 1; }
done
stored=$(stat -c %s reg/registry-v1/data/sha256/*.zst)
echo "stored compressed: $stored bytes ($(python3 -c "print(f'{$size/$stored:.1f}')")x smaller)"

# The quickstart's release, then training its config again vs reproducing it.
port=$((20000 + RANDOM % 20000))
"$pb" quickstart --dir qs --port "$port" --no-serve >/dev/null 2>&1
cd qs
for i in $(seq "$repeats"); do
  measure "train" "$pb" train --out "$work/retrained.pbm"
  measure "reproduce" "$pb" release reproduce v0.1.0
  grep -q "^reproduced v0.1.0" "$work/run.out" || { cat "$work/run.out"; exit 1; }
done
cd "$work"

python3 - results.txt "$size" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
size = int(sys.argv[2])
by = {}
for label, secs, kb in rows:
    by.setdefault(label, []).append((float(secs), int(kb)))
med = {k: (statistics.median(s for s, _ in v), max(kb for _, kb in v), len(v)) for k, v in by.items()}
print(f"{'command':<16}{'runs':>5}{'wall s (median)':>17}{'MB/s':>8}{'peak RSS MB (max)':>19}")
for k in ["cp+sha256sum", "data-push", "data-pull", "train", "reproduce"]:
    if k in med:
        s, kb, n = med[k]
        rate = f"{size / s / 1e6:.0f}" if k.startswith(("cp", "data")) else "-"
        print(f"{k:<16}{n:>5}{s:>17.2f}{rate:>8}{kb / 1024:>19.1f}")
print(f"data push / (cp + sha256sum): {med['data-push'][0] / med['cp+sha256sum'][0]:.2f}x")
print(f"reproduce - train: {med['reproduce'][0] - med['train'][0]:+.2f} s")
PY
