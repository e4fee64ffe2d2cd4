# The predict-buy server image: one static binary and the CA certificates that S3 over
# TLS needs, on an empty base, run as an unprivileged user.
#
# From source (needs Docker Hub for the Rust image):
#   docker build -t predict-buy .        # or: podman build -t predict-buy .
# From a binary built elsewhere (CI, or a machine that cannot pull the Rust image; this
# is what .ci/image.sh does): put `predict-buy` and `ca-certificates.crt` in DIR, then
#   podman build --target runtime-prebuilt --build-context prebuilt=DIR -t predict-buy .

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# glibc linked in statically: the runtime stage has no libc to load. The explicit
# --target keeps crt-static away from build scripts and proc-macros, which must link
# dynamically.
# Whole-program LTO in one codegen unit keeps the image small (as .ci/image.sh does).
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p predict-buy --target x86_64-unknown-linux-gnu \
    && install -D -m 0555 target/x86_64-unknown-linux-gnu/release/predict-buy /out/predict-buy \
    && install -D -m 0444 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# The same runtime as the last stage, filled from the `prebuilt` build context.
FROM scratch AS runtime-prebuilt
# `prebuilt` is a named build context (--build-context), not a stage, so DL3022 is moot.
# hadolint ignore=DL3022
COPY --from=prebuilt --chmod=0444 ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# hadolint ignore=DL3022
COPY --from=prebuilt --chmod=0555 predict-buy /predict-buy
# 65532 is the "nonroot" user of distroless images; scratch has no passwd file, so a
# numeric id is the only way to name it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/predict-buy", "serve"]
CMD ["--addr", "0.0.0.0:8080"]

# The default target: keep it last, and keep its lines in step with runtime-prebuilt.
FROM scratch AS runtime
COPY --from=builder /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/predict-buy /predict-buy
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/predict-buy", "serve"]
CMD ["--addr", "0.0.0.0:8080"]
