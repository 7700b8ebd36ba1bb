# syntax=docker/dockerfile:1.7
#
# One image for the whole agent: poller, dispatcher, reporter, kube-emulator
# and the prefect-k8s CLI, built once from the workspace.
#
#   docker build -t prefect-k8s:0.1.0 .                             # the agent
#   docker build --target kube-emulator-dev -t prefect-k8s-kube-emulator:dev .
#
# Why one image and not one per service: the binaries share almost all of
# their code (service-runtime, the Prefect client, tokio, kube, async-nats),
# so one build and one pull serve every Deployment, the versions of the three
# services can never disagree, and each Deployment (or compose service)
# chooses its program with `command:` (Kubernetes) or `entrypoint:` (compose).
# The default entrypoint is the CLI, so
#   docker run --rm prefect-k8s:0.1.0 install --rbac | kubectl apply -f -
# works without a Rust toolchain.

ARG RUST_VERSION=1.95

# ---- build -----------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace: `prefect-k8s install` embeds deploy/base at compile time.
COPY . .
# Cache mounts keep the registry and the target directory between builds; the
# binaries are copied out because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p poller -p dispatcher -p reporter -p kube-emulator -p prefect-k8s \
        --bin poller --bin dispatcher --bin reporter --bin kube-emulator --bin prefect-k8s \
 && mkdir -p /out \
 && for binary in poller dispatcher reporter kube-emulator prefect-k8s; do \
        cp "target/release/$binary" /out/; \
    done

# ---- runtime: the agent image -------------------------------------------------
# distroless/cc: glibc, libgcc_s, CA certificates and tzdata, and nothing else:
# no shell, no package manager, a few MB. The binaries link glibc dynamically
# (built on bookworm, so the same Debian 12 glibc), which rules out `scratch`
# and `distroless/static`; a musl build for `scratch` would trade that for
# musl's slower allocator under tokio's many threads. debian:bookworm-slim
# would work too but ships a shell and apt that nothing here needs.
# The `nonroot` tag runs as uid/gid 65532, which the manifests also require
# (runAsNonRoot, runAsUser 65532) and which needs nothing writable.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/prefect-k8s"]
CMD ["--help"]

# ---- kube-emulator-dev: the Kubernetes API emulator for docker-compose --------
# Its `process` runtime runs flow-run pods as local processes, so it lives in
# the Prefect image, where `prefect flow-run execute` exists. For local
# development only; never deploy it.
FROM prefecthq/prefect:3.9.1-python3.11 AS kube-emulator-dev
COPY --from=builder /out/kube-emulator /usr/local/bin/kube-emulator
# /kube holds the kubeconfig the emulator writes for the other containers; a
# named volume mounted there starts with this owner.
RUN mkdir -p /kube && chown 65532:65532 /kube
ENV PREFECT_HOME=/tmp/prefect \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kube-emulator"]
CMD ["serve", "--port", "6443", "--runtime", "process", "--kubeconfig", "/kube/kubeconfig"]

# The default target is the agent image.
FROM runtime
