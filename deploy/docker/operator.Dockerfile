# The operator image. Build from the repository root:
#   docker build -f deploy/docker/operator.Dockerfile -t msp-operator:0.1.0 .
# (No container engine runs on this project's CI machines, so CI does not build it.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
# The default policy is built from policy/ and bundled by host/build.rs.
RUN cargo build --locked --release -p msp-operator --bin msp-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/msp-operator /usr/local/bin/msp-operator
USER 65532:65532
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/msp-operator"]
CMD ["run"]
