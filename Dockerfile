# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# jemalloc, the server's allocator, is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*

# The broker's own build: the workspace without the load generator (the
# `bench` feature), so the image carries neither plotting nor progress bars.
# Cache mounts keep downloaded crates and compiled dependencies between builds.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY config ./config
COPY web/dist ./web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p anteroom --no-default-features \
    && cp target/release/anteroom /usr/local/bin/anteroom \
    && mkdir -p /var/lib/anteroom

# Runtime stage: glibc and CA certificates only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/anteroom /usr/local/bin/anteroom
COPY config/anteroom.toml /etc/anteroom/anteroom.toml
# The chat log and uploaded files: mount a volume here to keep them.
COPY --from=build --chown=65532:65532 /var/lib/anteroom /var/lib/anteroom
ENV ANTEROOM_LISTEN=0.0.0.0:7878 ANTEROOM_METRICS_LISTEN=0.0.0.0:9878 ANTEROOM_WEB_LISTEN=0.0.0.0:7880 ANTEROOM_DATA_DIR=/var/lib/anteroom
VOLUME /var/lib/anteroom
USER 65532:65532
EXPOSE 7878 7880 9878
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["anteroom", "healthcheck", "--addr", "127.0.0.1:9878", "--path", "/readyz"]
ENTRYPOINT ["anteroom"]
CMD ["serve", "--config", "/etc/anteroom/anteroom.toml"]
