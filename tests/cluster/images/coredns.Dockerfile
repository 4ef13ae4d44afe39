# CoreDNS for the test cluster's kube-dns Service: the static binary alone.
FROM scratch
COPY coredns /coredns
EXPOSE 53 53/udp
ENTRYPOINT ["/coredns"]
