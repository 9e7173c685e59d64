# Build stage: compile the release binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Build the dependencies against placeholder sources first, so that this layer
# stays cached while only the broker's own code changes.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src benches \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src benches

COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked

# Runtime stage: glibc and CA certificates only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/anteroom /usr/local/bin/anteroom
COPY config/anteroom.toml /etc/anteroom/anteroom.toml
ENV ANTEROOM_LISTEN=0.0.0.0:7878 ANTEROOM_METRICS_LISTEN=0.0.0.0:9878
USER 65532:65532
EXPOSE 7878 9878
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["anteroom", "healthcheck", "--addr", "127.0.0.1:9878", "--path", "/readyz"]
ENTRYPOINT ["anteroom"]
CMD ["serve", "--config", "/etc/anteroom/anteroom.toml"]
