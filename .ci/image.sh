#!/usr/bin/env bash
# Builds the container image from a static binary built here and proves it: its size is
# within budget, nothing in it runs as root, and its own entrypoint serves a release
# from a file:// registry (/healthz, /readyz, and the release's golden predictions).
#
# No Docker daemon is needed: Debian's podman builds `FROM scratch` images offline. The
# Dockerfile's default builder stage needs the Rust image from Docker Hub, which cannot
# be pulled here, so this builds its `runtime-prebuilt` target from the binary instead.
# `podman run` is refused in this sandbox (setrlimit), so the image is mounted and its
# entrypoint run under chroot as UID 65532, which is what the container would do.
#
# Environment: PREDICT_BUY_IMAGE (tag, default localhost/predict-buy:ci),
# PREDICT_BUY_IMAGE_MAX_MB (size budget, default 25), PREDICT_BUY_PODMAN_DRIVER
# (overlay or vfs; default: overlay when it works here).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

image=${PREDICT_BUY_IMAGE:-localhost/predict-buy:ci}
max_mb=${PREDICT_BUY_IMAGE_MAX_MB:-25}
triple=x86_64-unknown-linux-gnu
tag=v0.1.0 # the release `predict-buy quickstart` creates

echo "== image: static release binary ($triple, crt-static)"
# The explicit --target keeps crt-static off build scripts and proc-macros, and keeps
# these artifacts apart from the ordinary release build's. Whole-program LTO in one
# codegen unit takes minutes longer than the release profile's thin LTO, and is what
# keeps the image within its budget; the Dockerfile's builder stage builds the same way.
RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
  CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
  cargo build --release --locked -q -p predict-buy --target "$triple"
bin="$PWD/target/$triple/release/predict-buy"
if readelf -l "$bin" | grep -q INTERP; then
  echo "$bin asks for a dynamic loader; a scratch image has none" >&2
  exit 1
fi
echo "$bin: static, $(du -h "$bin" | cut -f1)"

# Mounting images and chroot need root: CI here is root; a GitHub runner uses sudo.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v podman >/dev/null; then
  echo "== image: installing podman"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi

work=$(mktemp -d)
# A private store per run: nothing is shared with other podman users on the machine,
# and a crashed run leaves nothing behind that the next one trips over.
store="$work/storage"
driver=${PREDICT_BUY_PODMAN_DRIVER:-}
if [ -z "$driver" ]; then
  driver=vfs
  if as_root podman --root "$store/probe" --runroot "$work/run-probe" --storage-driver overlay info >/dev/null 2>&1; then
    driver=overlay
  fi
fi
pm() { as_root podman --root "$store/root" --runroot "$store/run" --storage-driver "$driver" "$@"; }

server_pid=""
container=""
cleanup() {
  if [ -n "$server_pid" ]; then as_root kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$container" ]; then pm rm -f "$container" >/dev/null 2>&1 || true; fi
  pm image unmount -a >/dev/null 2>&1 || true
  pm rmi -af >/dev/null 2>&1 || true
  as_root rm -rf "$work"
}
trap cleanup EXIT

echo "== image: podman build --target runtime-prebuilt ($driver storage)"
mkdir -p "$work/prebuilt"
cp "$bin" "$work/prebuilt/predict-buy"
cp /etc/ssl/certs/ca-certificates.crt "$work/prebuilt/ca-certificates.crt"
pm build -q --network=none --target runtime-prebuilt \
  --build-context prebuilt="$work/prebuilt" -t "$image" -f Dockerfile . >/dev/null

size=$(pm image inspect --format '{{.Size}}' "$image")
size_mb=$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1000000 }')
echo "image $image: $size_mb MB (budget $max_mb MB)"
if [ "$size" -gt $((max_mb * 1000000)) ]; then
  echo "the image is over its $max_mb MB budget" >&2
  exit 1
fi

echo "== image: nothing runs as root"
user=$(pm image inspect --format '{{.Config.User}}' "$image")
entrypoint=$(pm image inspect --format '{{json .Config.Entrypoint}}' "$image")
cmd=$(pm image inspect --format '{{json .Config.Cmd}}' "$image")
ports=$(pm image inspect --format '{{json .Config.ExposedPorts}}' "$image")
[ "$user" = "65532:65532" ] || { echo "the image runs as '$user', not 65532:65532" >&2; exit 1; }
[ "$entrypoint" = '["/predict-buy","serve"]' ] || { echo "unexpected entrypoint $entrypoint" >&2; exit 1; }
echo "user $user, entrypoint $entrypoint, cmd $cmd, exposes $ports"
case "$ports" in *8080/tcp*) ;; *) echo "the image does not expose 8080" >&2; exit 1 ;; esac

root=$(pm image mount "$image")
setuid=$(as_root find "$root" -perm /6000 -print)
if [ -n "$setuid" ]; then
  echo "setuid/setgid files in the image: $setuid" >&2
  exit 1
fi
files=$(as_root find "$root" -type f -printf '/%P\n' | sort | tr '\n' ' ')
if [ "$files" != "/etc/ssl/certs/ca-certificates.crt /predict-buy " ]; then
  echo "the image should hold only the binary and the CA certificates, it holds: $files" >&2
  exit 1
fi
echo "files: $files(no setuid/setgid)"

echo "== image: a release to serve (quickstart with the static binary)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
project="$work/project"
"$bin" quickstart --dir "$project" --rows 5000 --port "$(free_port)" --no-serve >"$work/quickstart.log" 2>&1 \
  || { cat "$work/quickstart.log" >&2; exit 1; }
(cd "$project" && "$bin" release show "$tag" --json) >"$work/release.json"

echo "== image: its entrypoint under chroot as 65532:65532"
# A container's writable layer over the image, as `podman run` would give; the registry
# is copied into it so the image itself stays untouched.
container=$(pm create --network=none "$image")
rootfs=$(pm mount "$container")
as_root cp -a "$project/.predict-buy/registry" "$rootfs/registry"
as_root chmod -R a+rX "$rootfs/registry"
# Every container runtime gives a container these devices; chroot does not. Without
# /dev/urandom the static binary panics as soon as it needs random numbers (the S3
# client does): its getrandom falls back to reading the device (seen here).
as_root mkdir -p "$rootfs/dev"
as_root mknod -m 666 "$rootfs/dev/null" c 1 3
as_root mknod -m 444 "$rootfs/dev/random" c 1 8
as_root mknod -m 444 "$rootfs/dev/urandom" c 1 9
port=$(free_port)
mapfile -t entry < <(jq -r '.[]' <<<"$entrypoint")
# Bound to 127.0.0.1 rather than the image's default 0.0.0.0: tests stay on loopback.
as_root env -i "$(command -v chroot)" --userspec=65532:65532 "$rootfs" "${entry[@]}" \
  --registry file:///registry --env nonprod --addr "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server_pid=$!

python3 - "http://127.0.0.1:$port" "$work/release.json" "$tag" <<'PY' || { cat "$work/serve.log" >&2; exit 1; }
import json, sys, time, urllib.error, urllib.request

base, release_path, tag = sys.argv[1:]
release = json.load(open(release_path))

def get(path):
    try:
        with urllib.request.urlopen(base + path, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

deadline = time.time() + 30
while True:
    try:
        status, _ = get("/readyz")
        if status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the server in the image did not become ready within 30 s")
    time.sleep(0.2)
assert get("/healthz")[0] == 200, "/healthz"
print("healthz 200, readyz 200")

golden = release["golden"]
assert golden, f"release {tag} records golden predictions"
for g in golden:
    req = urllib.request.Request(
        base + "/predict", data=json.dumps(g["input"]).encode(),
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        got = json.load(r)
    want = (g["predicted_class"], g["probability"])
    assert (got["predicted_class"], got["probability"]) == want, f"{g['input']}: got {got}, release says {want}"
print(f"{len(golden)} golden predictions of {tag} match")

metrics = get("/metrics")[1].decode()
serving = [l for l in metrics.splitlines() if l.startswith("model_info{") and l.endswith(" 1")]
assert any(f'release="{tag}"' in l for l in serving), f"model_info does not show {tag}: {serving}"
print(f"/metrics: model_info serves {tag}")
PY
echo "== image: passed ($image, $size_mb MB)"
