# The pod sandbox image: Kubernetes' static pause binary and nothing else.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
