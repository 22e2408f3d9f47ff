# Builds the one chatstream binary; compose.yaml runs it beside Redis and Postgres.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/chatstream ./cmd/chatstream

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chatstream /chatstream
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/chatstream"]
CMD ["serve"]
