# wallet-worker: one image, one binary, every subcommand.
#
#   docker build -t wallet-worker .
#   docker run --rm wallet-worker --help
#   docker run --rm -e DATABASE_URL=... -e AMQP_URL=... -p 127.0.0.1:9090:9090 wallet-worker
#
# The build needs no database: no query is checked against Postgres at compile time
# (there is no `query!`/`query_as!` macro in the code); only `sqlx::migrate!()` reads
# ./migrations, which it embeds into the binary.

# Base images pinned to releases: the builder to the toolchain rust-toolchain.toml names
# (so rustup downloads nothing), the runtime to a Debian point release with the same
# glibc. Where the registry is reachable, pin them further by digest (@sha256:...).
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:12.12-slim

# ---------------------------------------------------------------------------------------
# cargo-chef: the dependencies are compiled in a layer of their own, keyed by a recipe
# (Cargo.toml, Cargo.lock and the crate's layout, not its code), so a change to src/
# rebuilds only the crate.
FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY rust-toolchain.toml ./
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
# migrations/ must be present before compiling: `sqlx::migrate!()` embeds it.
COPY Cargo.toml Cargo.lock ./
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked \
    && ./target/release/wallet-worker --version

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="wallet-worker" \
      org.opencontainers.image.description="RabbitMQ/Postgres worker that saves customers' external payment sources to their wallet and reuses them"

# ca-certificates: the OS trust store every TLS client of the worker verifies servers
# against (token_urls, Postgres verify-full, amqps; plus WALLET_TLS_CA_FILE when set).
# Nothing else is needed: TLS is rustls with ring, statically linked.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so `runAsNonRoot`-style policies can verify it.
RUN groupadd --system --gid 10001 wallet \
    && useradd --system --uid 10001 --gid wallet --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wallet

COPY --from=builder /build/target/release/wallet-worker /usr/local/bin/wallet-worker

USER 10001:10001

# Inside a container the admin server (health, readiness, metrics, read API) must listen
# on all interfaces to be reachable through a published port; the binary's own default,
# 127.0.0.1:9090, would only answer from inside the container. Publish it deliberately
# (e.g. `-p 127.0.0.1:9090:9090`); the read API stays off without WALLET_ADMIN_TOKEN.
ENV WALLET_ADMIN_ADDR=0.0.0.0:9090
EXPOSE 9090

# Liveness of `run` through GET /healthz, with bash's /dev/tcp (no curl in the image).
# The port follows WALLET_ADMIN_ADDR. Other subcommands (gateway-sim, loadgen, migrate,
# ...) serve no admin port: give them their own healthcheck or disable it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "addr=${WALLET_ADMIN_ADDR:-127.0.0.1:9090}; exec 3<>/dev/tcp/127.0.0.1/${addr##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

ENTRYPOINT ["wallet-worker"]
CMD ["run"]
