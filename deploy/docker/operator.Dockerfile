# The operator image. Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t msp-operator:0.1.0 .
# The binary is compiled in the `build` stage by default. With
#   --build-arg BINARIES=prebuilt
# it is taken from `prebuilt/msp-operator` in the build context instead (the
# project's cluster tests build it on the host; tests/cluster/images.sh), and
# RUNTIME_IMAGE swaps the base for one that exists locally.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
# The default policy is built from policy/ and bundled by host/build.rs.
RUN cargo build --locked --release -p msp-operator --bin msp-operator \
    && mkdir -p /out && cp target/release/msp-operator /out/

FROM scratch AS prebuilt
COPY prebuilt/msp-operator /out/msp-operator

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE}
COPY --from=binaries /out/msp-operator /usr/local/bin/msp-operator
USER 65532:65532
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/msp-operator"]
CMD ["run"]
