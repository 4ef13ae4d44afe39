# The Mayastor io-engine image: Debian slim, the shared libraries the binary
# loads, and the binary. The io-engine is not built from this repository: it is
# built from the pinned OpenEBS sources by tests/io-engine/build.sh. Build
# from a context holding that binary as `io-engine`:
#   mkdir ctx && objcopy --strip-debug "$(tests/io-engine/build.sh)/io-engine" ctx/io-engine
#   docker build -f deploy/docker/io-engine.Dockerfile -t msp-io-engine:0.1.0 \
#     --build-arg PACKAGES="$(tests/io-engine/runtime-packages.sh ctx/io-engine | tr '\n' ' ')" ctx
# PACKAGES are the Debian packages of its libraries, found with ldd on the
# machine that linked it (runtime-packages.sh): installed here when given.
# tests/cluster/images.sh gives none and a RUNTIME_IMAGE that already has
# them (made with mmdebstrap: no registry there).
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUNTIME_IMAGE}
ARG PACKAGES=""
RUN if [ -n "$PACKAGES" ]; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY io-engine /usr/local/bin/io-engine
# gRPC (pools, registration's endpoint); NVMe-oF listens on 8420 and 4421.
EXPOSE 10124 8420 4421
ENTRYPOINT ["/usr/local/bin/io-engine"]
