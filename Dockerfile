# syntax=docker/dockerfile:1
#
# lsproxy container image: a static Go binary on distroless, running as a
# non-root user, with CA certificates (for the Lightspeed API, the token
# endpoint and rediss://) and a HEALTHCHECK that needs no shell tools.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t lsproxy .
#   docker run --rm lsproxy version
#
# The image binds both listeners on 0.0.0.0 (LSPROXY_LISTEN,
# LSPROXY_CONTROL_LISTEN below). A non-loopback proxy listener needs caller
# keys (LSPROXY_CLIENT_KEYS) or LSPROXY_ALLOW_UNAUTHENTICATED=true, or lsproxy
# refuses to start. Set listeners with environment variables: they override
# the config file. See docs/operations.md.
#
# deploy/deploy_test.go parses this file: it runs the `go build` line below
# exactly (flags, ldflags, environment) and checks the stamped version, the
# static linking and the HEALTHCHECK command. Keep one `go build` line.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# The commit: .git is not in the build context (.dockerignore), so the Go
# toolchain cannot stamp it (GOFLAGS=-buildvcs=false); ldflags do.
ARG REVISION=unknown
# Set by BuildKit for the target platform (docker buildx --platform ...).
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ENV CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} GOFLAGS=-buildvcs=false
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/lsproxy ./cmd/lsproxy
# The embedded store's directory, owned by the runtime user (distroless has no mkdir).
RUN mkdir -p /out/data

# distroless static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell, no package manager. Pin a digest in production:
# gcr.io/distroless/static-debian12:nonroot@sha256:...
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="lsproxy" \
      org.opencontainers.image.description="Reverse proxy that injects Lightspeed OAuth2 bearer tokens per tenant" \
      org.opencontainers.image.source="https://github.com/lsproxy/lsproxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/lsproxy /usr/local/bin/lsproxy
COPY --from=build --chown=65532:65532 /out/data /data
ENV LSPROXY_LISTEN=0.0.0.0:8080 \
    LSPROXY_CONTROL_LISTEN=0.0.0.0:8081 \
    LSPROXY_DATA_DIR=/data
USER 65532:65532
# 8080: proxied traffic. 8081: /healthz, /readyz, /metrics, /admin, /oauth/*.
EXPOSE 8080 8081
# `lsproxy healthcheck` GETs /healthz on LSPROXY_CONTROL_LISTEN (0.0.0.0 is
# dialled as 127.0.0.1) and exits 0 or 1. Kubernetes ignores HEALTHCHECK and
# uses the chart's probes instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/lsproxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/lsproxy"]
CMD ["serve"]
