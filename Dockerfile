# syntax=docker/dockerfile:1.7
# geometra-sidecar container image.
#
#   docker build -t geometra-sidecar:0.1.0 .
#
# Build stage: the release binary with the versions of Cargo.lock (--locked).
# Runtime stage: distroless cc (glibc + libgcc, no shell, no package manager),
# running as the distroless "nonroot" user, UID/GID 65532, as the helm chart
# and CONTRIBUTING.md ("Container image") expect.

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
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin geometra-sidecar \
 && install -D -m 0755 target/release/geometra-sidecar /out/geometra-sidecar \
 && /out/geometra-sidecar --version

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="geometra-sidecar" \
      org.opencontainers.image.description="OpenTelemetry sidecar for Geometra AI: OTLP in, Prometheus metrics out, logs forwarded" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/geometra/geometra-sidecar"
COPY --from=build /out/geometra-sidecar /usr/local/bin/geometra-sidecar
# No listen addresses are baked in as ENV: they would override the config
# file. Beside an app in a pod, the defaults (OTLP on 127.0.0.1, metrics on
# 0.0.0.0:9464) are right; as a container of its own (docker-compose), pass
# --otlp-grpc-listen 0.0.0.0:4317 and --otlp-http-listen 0.0.0.0:4318.
# OTLP gRPC, OTLP HTTP, /metrics + /healthz + /readyz
EXPOSE 4317 4318 9464
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/geometra-sidecar"]
