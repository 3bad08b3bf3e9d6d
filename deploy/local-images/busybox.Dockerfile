# A stand-in for the official `busybox` image (the demo backends of deploy/docker-compose.yml:
# `busybox httpd`), for machines that reach Debian's package archive but no image registry.
#
#   docker build -f deploy/local-images/busybox.Dockerfile --build-arg BASE_IMAGE=... \
#     -t nerve-synapse-busybox:local deploy/local-images
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# (Installed unless the base has it: compose-check.sh's host-made base does.)
RUN if ! command -v busybox >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox \
      && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log; \
    fi
CMD ["busybox", "sh"]
