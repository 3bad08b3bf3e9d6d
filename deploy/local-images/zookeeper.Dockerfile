# A stand-in for the official `zookeeper` image, for machines that reach Debian's package
# archive but no image registry: Debian's ZooKeeper 3.8 (the server's jars and a headless JRE,
# without the `zookeeper` package's GUI tools) on the same base image as the agents,
# configured from the same ZOO_* variables as the official image (see
# zookeeper-entrypoint.sh), so deploy/docker-compose.yml runs unchanged with either.
#
#   docker build -f deploy/local-images/zookeeper.Dockerfile --build-arg BASE_IMAGE=... \
#     -t nerve-synapse-zookeeper:3.8 deploy/local-images
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# Installed unless the base has them (compose-check.sh's host-made base with --jre does).
# man1: the JRE's postinst links its man page there, and -slim images have no such directory.
RUN if ! command -v java >/dev/null || [ ! -f /usr/share/java/zookeeper.jar ]; then \
      mkdir -p /usr/share/man/man1 \
      && apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           libzookeeper-java default-jre-headless \
      && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log; \
    fi \
 && useradd --system --uid 1000 --user-group --home-dir /data --shell /usr/sbin/nologin zookeeper \
 && mkdir -p /conf /data /datalog \
 && chown zookeeper:zookeeper /conf /data /datalog
COPY zookeeper-entrypoint.sh /usr/local/bin/zookeeper-entrypoint
USER zookeeper
EXPOSE 2181 2888 3888
VOLUME ["/data", "/datalog"]
ENTRYPOINT ["/usr/local/bin/zookeeper-entrypoint"]
