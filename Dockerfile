# token-issuer: a multi-stage build of the release binary into a small runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin token-issuer \
 && strip target/release/token-issuer

FROM debian:bookworm-slim
# rustls with bundled roots: no ca-certificates or curl needed; the health check is the binary.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/token-issuer --create-home token-issuer
COPY --from=build /src/target/release/token-issuer /usr/local/bin/token-issuer
USER token-issuer
WORKDIR /var/lib/token-issuer
ENV TOKEN_ISSUER_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["token-issuer", "healthcheck"]
ENTRYPOINT ["token-issuer"]
CMD ["serve"]
