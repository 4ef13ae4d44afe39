# The stand-in storage node image (speaks the Mayastor gRPC pool API; in
# production the Mayastor io-engine takes its place). Build from the repository root:
#   docker build -f deploy/docker/storage-node.Dockerfile -t msp-storage-node:0.1.0 .
# The binary is compiled in the `build` stage by default. With
#   --build-arg BINARIES=prebuilt
# it is taken from `prebuilt/storage-node` in the build context instead (the
# project's cluster tests build it on the host; tests/cluster/images.sh).
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=build

FROM rust:1.95-bookworm AS build
# The wasm target too: msp-tests links msp-operator, whose build script builds
# the bundled policy.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p msp-tests --bin storage-node \
    && mkdir -p /out && cp target/release/storage-node /out/

FROM scratch AS prebuilt
COPY prebuilt/storage-node /out/storage-node

FROM ${BINARIES} AS binaries

# It probes and labels raw block devices. Debian slim rather than distroless:
# its util-linux brings `wipefs` (libblkid), which the node asks before it
# writes a pool label on a disk (without it the node refuses to write).
FROM ${RUNTIME_IMAGE}
COPY --from=binaries /out/storage-node /usr/local/bin/storage-node
EXPOSE 10124
ENTRYPOINT ["/usr/local/bin/storage-node"]
