# One static, non-root image for every claimcheck service. COPY --chmod
# needs BuildKit (the default builder since Docker 23).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/claimcheck ./cmd/claimcheck && \
    mkdir -p /out/empty

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/claimcheck /claimcheck
# One directory per thing a process keeps, each owned by the uid that
# compose.yaml runs its process as (a named volume mounted there starts as
# a copy, owner included): api 10001, gateway 10002, progress and worker
# 10003. Mode 0700: no other uid can list them, let alone read a key.
COPY --from=build --chown=10001:10001 --chmod=0700 /out/empty /keys/jobs
COPY --from=build --chown=10002:10002 --chmod=0700 /out/empty /keys/gateway
COPY --from=build --chown=10003:10003 --chmod=0700 /out/empty /keys/links
COPY --from=build --chown=10003:10003 --chmod=0700 /out/empty /keys/workers
COPY --from=build --chown=10003:10003 --chmod=0700 /out/empty /results
# Run without compose's user: distroless's nonroot (65532), keeping
# everything under --data-dir /data.
COPY --from=build --chown=65532:65532 --chmod=0700 /out/empty /data
USER nonroot
ENTRYPOINT ["/claimcheck"]
