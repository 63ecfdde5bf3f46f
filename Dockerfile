# One static, non-root image for every claimcheck service.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/claimcheck ./cmd/claimcheck && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/claimcheck /claimcheck
# A named volume mounted at /data starts as a copy of this, owned by nonroot.
COPY --from=build --chown=65532:65532 /out/data /data
USER nonroot
ENTRYPOINT ["/claimcheck"]
