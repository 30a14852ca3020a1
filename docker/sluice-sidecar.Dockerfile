# syntax=docker/dockerfile:1
# The sluice-sidecar image. Build from the repository root:
#   docker build -f docker/sluice-sidecar.Dockerfile -t sluice-sidecar:0.1.0 .
# The binary is exactly what `cargo build --release --locked -p sluice-sidecar`
# makes on a developer machine (same Cargo.lock, same release profile); the
# image adds nothing but the C runtime it links against.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is
# copied out of the cached target/ before the layer ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice-sidecar \
 && install -D -m 0755 target/release/sluice-sidecar /out/sluice-sidecar

# Distroless with glibc and libgcc (Rust's default target links them
# dynamically), no shell, no package manager; "nonroot" is uid/gid 65532, the
# user the chart's securityContext and the injector's sidecar run as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice-sidecar /usr/local/bin/sluice-sidecar
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice-sidecar"]
