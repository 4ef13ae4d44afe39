# The stand-in storage node image (speaks the Mayastor gRPC pool API; in
# production the Mayastor io-engine takes its place). Build from the repository root:
#   docker build -f deploy/docker/storage-node.Dockerfile -t msp-storage-node:0.1.0 .
# (No container engine runs on this project's CI machines, so CI does not build it.)
FROM rust:1.95-bookworm AS build
# The wasm target too: msp-tests links msp-operator, whose build script builds
# the bundled policy.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p msp-tests --bin storage-node

# It probes and labels raw block devices. Debian slim rather than distroless:
# its util-linux brings `blkid`, the second opinion the node asks before it
# writes a pool label on a disk (without it only the built-in probe runs).
FROM debian:bookworm-slim
COPY --from=build /src/target/release/storage-node /usr/local/bin/storage-node
EXPOSE 10124
ENTRYPOINT ["/usr/local/bin/storage-node"]
