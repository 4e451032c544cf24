# syntax=docker/dockerfile:1
# One image with both binaries: `registry` and `authd`. compose.yml runs
# one container of each from it.
#
#   docker build -t private-registry .
#   docker compose up -d && docker compose logs authd   # first admin password

# ---- build ----
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p registry -p authd \
 && install -D -m 0755 target/release/registry /out/bin/registry \
 && install -D -m 0755 target/release/authd /out/bin/authd \
 && mkdir -p /out/empty

# ---- runtime: glibc + CA certificates, no shell, non-root (uid 65532) ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# Data directories owned by the runtime user, so named volumes inherit it.
COPY --from=build --chown=65532:65532 /out/empty/ /var/lib/registry/
COPY --from=build --chown=65532:65532 /out/empty/ /var/lib/authd/
USER 65532:65532
# The same paths and port as registry:2, so existing volumes and configs
# carry over; authd keeps its database and keys in /var/lib/authd.
ENV REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=/var/lib/registry \
    REGISTRY_HTTP_ADDR=:5000 \
    AUTHD_DATA_DIR=/var/lib/authd \
    AUTHD_ADDR=0.0.0.0:5001
VOLUME ["/var/lib/registry", "/var/lib/authd"]
EXPOSE 5000 5001
ENTRYPOINT ["/usr/local/bin/registry"]
CMD ["serve"]
