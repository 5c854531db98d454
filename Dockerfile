# For people who build with Docker; `deployer push-image` builds the same image with no
# Docker engine. Multi-stage: compile, then a minimal non-root runtime with CA certs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p qbo-invoice-processor \
 && cp target/release/qbo-invoice-processor /qbo-invoice-processor

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /qbo-invoice-processor /usr/local/bin/qbo-invoice-processor
COPY assets /app/assets
USER nonroot
ENTRYPOINT ["/usr/local/bin/qbo-invoice-processor"]
