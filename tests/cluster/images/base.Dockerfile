# A Debian bookworm base image from a rootfs tarball made by mmdebstrap (no
# image registry is reachable from the project's machines).
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]
