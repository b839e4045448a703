# One image with the three govbus binaries: govbus-broker, govbus-adapter and
# govbus (demo, certificates, operator commands). Multi-stage: the build
# stage has the Rust toolchain and gcc/make for librdkafka; the runtime stage
# only the binaries.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p govbus-broker -p govbus-adapter -p govbus-cli \
 && mkdir -p /out \
 && cp target/release/govbus-broker target/release/govbus-adapter target/release/govbus /out/

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home /var/lib/govbus govbus \
 && mkdir -p /var/lib/govbus /etc/govbus \
 && chown govbus /var/lib/govbus
COPY --from=build /out/ /usr/local/bin/
COPY deploy/config/policy.toml /etc/govbus/policy.toml
USER govbus
WORKDIR /var/lib/govbus
ENTRYPOINT ["govbus-broker"]
