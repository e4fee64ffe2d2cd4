#!/usr/bin/env bash
# Cold start of the server with the seed-config model (10 unlimited-depth boosted
# trees, about 1.7 M nodes): time from exec to the first 200 from /readyz, and the
# server's resident memory once it has answered one /predict.
# Usage: bench/serve/load.sh [RUNS]   (default 7)
#   MODEL=path        serve this artifact instead of training the seed-config model
#   PREDICT_BUY_BIN=  the binary measured (default: this tree's release build)
#   BASE_BIN=path     also measure this binary, interleaved run by run, and print the
#                     ratios (this one / base); it serves BASE_MODEL, or a model it
#                     trains itself from the same data and config (an older binary
#                     writes, and reads, only its own artifact format)
#   BASE_MODEL=path   the artifact BASE_BIN serves
# The model is trained as bench/train/seed.sh trains it: `data synth --rows 508146
# --test-fraction 0.25 --seed 11` (the original's 381k training rows) and the seed's
# config (SEED_CONFIG, default ../shared/data/seed-config.yml beside the repo; without
# it the same settings are written here).
# /readyz is polled every 2 ms over a raw socket from one Python process, so the
# poller costs the server's two cores next to nothing. Prints per binary the median,
# min and max of exec -> /readyz and of VmRSS (and the peak, VmHWM), plus the CPU
# flags and the load average, to quote beside the figures.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
runs=${1:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${PREDICT_BUY_BIN:-}" ]; then
  cargo build --release -q -p predict-buy --manifest-path "$root/Cargo.toml"
  target=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  pb="$target/release/predict-buy"
else
  pb=$(realpath "$PREDICT_BUY_BIN")
fi
base=${BASE_BIN:+$(realpath "$BASE_BIN")}
model=${MODEL:+$(realpath "$MODEL")}
base_model=${BASE_MODEL:+$(realpath "$BASE_MODEL")}

cd "$work"
# shellcheck source=bench/seed_data.sh
. "$root/bench/seed_data.sh"
need_data() {
  [ -d data ] && return 0
  echo "making 508,146 synthetic rows ..." >&2
  seed_data "$pb" "$root"
}
if [ -z "$model" ]; then
  need_data
  echo "training the seed-config model with $pb ..." >&2
  "$pb" train --config config.yml --out "$work/model.pbm" >/dev/null 2>&1
  model="$work/model.pbm"
fi
if [ -n "$base" ] && [ -z "$base_model" ]; then
  need_data
  echo "training the seed-config model with $base ..." >&2
  "$base" train --config config.yml --out "$work/base.pbm" >/dev/null 2>&1
  base_model="$work/base.pbm"
fi

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|avx512f|avx512bw|sha_ni)$' | tr '\n' ' ')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $model ($(stat -c %s "$model") bytes)"
[ -n "$base" ] && echo "base model: $base_model ($(stat -c %s "$base_model") bytes)"

python3 - "$runs" "$pb" "$model" "${base:-}" "${base_model:-}" <<'PY'
import os, signal, socket, statistics, subprocess, sys, time

runs = int(sys.argv[1])
peers = [("this", sys.argv[2], sys.argv[3])]
if sys.argv[4]:
    peers.append(("base", sys.argv[4], sys.argv[5]))
BODY = (b'{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,'
        b'"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, raw):
    """The status code of one HTTP/1.1 request, or None if nothing listens yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                head += chunk
            return int(head.split(b" ", 2)[1])
    except (ConnectionRefusedError, ConnectionResetError):
        return None


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def once(binary, model):
    port = free_port()
    ready = f"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    predict = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n").encode() + BODY
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "serve", "--model", model, "--addr", f"127.0.0.1:{port}",
                             "--drain", "0s"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while request(port, ready) != 200:
            if proc.poll() is not None:
                sys.exit(f"{binary} exited: {proc.stderr.read().decode()}")
            if time.monotonic() - t0 > 60:
                sys.exit(f"{binary} not ready after 60 s")
            time.sleep(0.002)
        ready_ms = (time.monotonic() - t0) * 1000
        code = request(port, predict)
        if code != 200:
            sys.exit(f"{binary}: /predict answered {code}")
        return ready_ms, status_kb(proc.pid, "VmRSS") / 1024, status_kb(proc.pid, "VmHWM") / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


results = {name: [] for name, _, _ in peers}
for i in range(runs):
    # Interleaved, so a busier moment of the machine falls on both sides alike.
    for name, binary, model in peers:
        results[name].append(once(binary, model))
        time.sleep(0.2)


def summary(values):
    return statistics.median(values), min(values), max(values)


print(f"\n{'binary':<8}{'runs':>5}  {'exec -> /readyz ms (median, min, max)':<40}"
      f"{'VmRSS MB (median, min, max)':<32}{'VmHWM MB (median)':>18}")
medians = {}
for name, binary, _ in peers:
    rows = results[name]
    ms, rss, hwm = (summary([r[k] for r in rows]) for k in range(3))
    medians[name] = (ms[0], rss[0], hwm[0])
    print(f"{name:<8}{len(rows):>5}  {ms[0]:>8.1f} {ms[1]:>8.1f} {ms[2]:>8.1f}{'':<14}"
          f"{rss[0]:>8.1f} {rss[1]:>8.1f} {rss[2]:>8.1f}{'':<5}{hwm[0]:>18.1f}")
    print(f"        each run: ms {[round(r[0]) for r in rows]}, RSS MB {[round(r[1], 1) for r in rows]}")
    print(f"        ({binary})")
if "base" in medians:
    t, b = medians["this"], medians["base"]
    print(f"\nthis / base (medians): exec -> /readyz {t[0] / b[0]:.2f}x, "
          f"VmRSS {t[1] / b[1]:.2f}x, VmHWM {t[2] / b[2]:.2f}x")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
