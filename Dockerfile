# syntax=docker/dockerfile:1.7
# geometra-sidecar container image.
#
#   docker build -t geometra-sidecar:0.1.0 .
#
# Build stage: scripts/image-binary.sh builds the binary with the versions of
# Cargo.lock (--locked): Cargo.toml's `image` profile (release, fat LTO, one
# codegen unit), glibc linked statically. Then scripts/image-rootfs.sh lays
# out the whole root filesystem from it: the stripped binary, the CA bundle,
# /etc/nsswitch.conf, /etc/passwd and /etc/group with the non-root user
# 65532, /tmp. Runtime stage: that tree on scratch, nothing else.
#
# scripts/image.sh builds the same image where no registry is reachable: the
# same script on the host's Debian, and this file's runtime stage (from
# "FROM scratch AS runtime" to the end) as its Containerfile, so the two
# cannot drift (tests/python/pod/test_image.py checks it). Keep every line
# of the runtime stage valid there: the only build-stage reference it may
# hold is `COPY --from=build /out/rootfs/ /`.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Manifests and sources only (see .dockerignore); benches/ is declared in
# Cargo.toml, so it has to be there for the manifest to load; build.rs
# generates the Prometheus types from proto/ and links with the function
# order of link/symbol-order.txt.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY proto ./proto
COPY link ./link
COPY scripts/image-rootfs.sh ./scripts/image-rootfs.sh
COPY scripts/image-binary.sh ./scripts/image-binary.sh
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    bin=$(scripts/image-binary.sh) \
 && "$bin" --version \
 && scripts/image-rootfs.sh "$bin" /out/rootfs

FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="geometra-sidecar" \
      org.opencontainers.image.description="OpenTelemetry sidecar for Geometra AI: OTLP in, Prometheus metrics out, logs forwarded" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/geometra/geometra-sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/rootfs/ /
# No listen addresses are baked in as ENV: they would override the config
# file. Beside an app in a pod, the defaults (OTLP on 127.0.0.1, metrics on
# 0.0.0.0:9464) are right; as a container of its own (docker-compose), pass
# --otlp-grpc-listen 0.0.0.0:4317 and --otlp-http-listen 0.0.0.0:4318.
# OTLP gRPC, OTLP HTTP, /metrics + /healthz + /readyz
EXPOSE 4317 4318 9464
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/geometra-sidecar"]
