# syntax=docker/dockerfile:1
#
# imapgate container image.
#
#   docker build -t imapgate .
#   docker run --rm -p 143:143 -p 993:993 -p 9143:9143 \
#       -v "$PWD/imapgate.toml:/etc/imapgate/imapgate.toml:ro" imapgate
#
# The bundled /etc/imapgate/imapgate.toml is config/imapgate.toml, the demo's: it listens on
# 127.0.0.1 inside the container and expects Dovecot on 127.0.0.1:10143. Mount a real config
# over it, with listeners on 0.0.0.0:143 / 0.0.0.0:993 and the admin server on 0.0.0.0:9143,
# and its passdb files beside it. Binding ports below 1024 as a non-root user relies on
# Docker's default net.ipv4.ip_unprivileged_port_start=0; elsewhere, listen on high ports.

# ---- build: the same command as README's build step -------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/imapgate /out/imapgate
# The example config, made to stand alone: its TLS listeners point at the
# demo's certificate (../.demo/tls/), so give the image a placeholder
# self-signed one at /etc/imapgate/tls/.  Replace it (and the config).
RUN mkdir -p /out/etc/tls \
    && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=imapgate.invalid" -keyout /out/etc/tls/key.pem -out /out/etc/tls/cert.pem \
    && sed 's#\.\./\.demo/tls/#tls/#g' config/imapgate.toml >/out/etc/imapgate.toml \
    && cp config/users /out/etc/users

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 imapgate \
    && useradd --system --uid 10001 --gid imapgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin imapgate
COPY --from=build /out/imapgate /usr/local/bin/imapgate
COPY scripts/healthcheck /usr/local/bin/imapgate-healthcheck
COPY --from=build --chown=imapgate:imapgate /out/etc/ /etc/imapgate/

USER imapgate:imapgate
# IMAP (plain/STARTTLS), IMAPS, metrics/admin.
EXPOSE 143 993 9143
# The first [[listener]] must greet "* OK" (see scripts/healthcheck; override the address
# with IMAPGATE_HEALTH_ADDR=host:port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["imapgate-healthcheck"]
ENTRYPOINT ["imapgate"]
CMD ["--config", "/etc/imapgate/imapgate.toml"]
