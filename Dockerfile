# syntax=docker/dockerfile:1
# distillguard's container image: a static binary on distroless static,
# running as the nonroot user (65532:65532). Nothing in the image is
# writable or needs to be, so it runs with a read-only root filesystem.
#
#   docker build -t distillguard:dev .
#
# Without a container daemon, `make image` builds the same image (same
# path, user, entrypoint, arguments and ports; deploy/image) as an OCI layout
# and a `docker load` tarball.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
# Set by BuildKit from --platform (cross-compiled on the build platform).
ARG TARGETOS
ARG TARGETARCH
# No cgo: the final stage has no libc. -trimpath and an empty build id keep
# the binary a function of the source; the vtprotobuf tag compiles in the
# generated marshallers the ext_proc codec uses.
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -tags=vtprotobuf -trimpath -ldflags="-s -w -buildid=" -o /out/distillguard ./cmd/distillguard

# distroless static: CA bundle, /etc/passwd with nonroot, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=""
LABEL org.opencontainers.image.title="distillguard" \
      org.opencontainers.image.description="Envoy ext_proc server defending inference APIs against model extraction" \
      org.opencontainers.image.source="https://github.com/distillguard/distillguard" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/distillguard /usr/local/bin/distillguard
USER 65532:65532
# 50051: ext_proc gRPC (Envoy). 9090: admin HTTP (/healthz, /readyz, /metrics, /v1/...).
EXPOSE 50051 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/distillguard"]
# The binary binds the admin port to 127.0.0.1 by default; in a container the
# kubelet's probes and Prometheus come from outside, so bind every address.
CMD ["-admin-addr", "0.0.0.0:9090"]
