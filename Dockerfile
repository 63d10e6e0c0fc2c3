# token-issuer: the release binary in a small runtime image, as a non-root user.
#   docker build -t token-issuer .                      compiles it (stage build), then the image
#   docker build --target prebuilt -t token-issuer CTX  takes CTX/token-issuer, built elsewhere
#                                                       (tests/container.rs: no second compile)
# The stages are in this order so that the legacy builder, which builds every stage before the
# target, never compiles for --target prebuilt.

FROM debian:bookworm-slim AS runtime
# rustls with bundled roots: no ca-certificates or curl needed; the health check is the binary.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/token-issuer --create-home token-issuer
USER token-issuer
WORKDIR /var/lib/token-issuer
# The container's default address. It overrides `listen` in a mounted config (the environment
# wins over the file), and start-up then logs a warning naming both; set TOKEN_ISSUER_LISTEN
# (or pass --listen) to choose another.
ENV TOKEN_ISSUER_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["token-issuer", "healthcheck"]
ENTRYPOINT ["token-issuer"]
CMD ["serve"]

FROM runtime AS prebuilt
COPY token-issuer /usr/local/bin/token-issuer

# Pinned: the toolchain the project is built and tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change to the sources rebuilds only the crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked --bin token-issuer \
 && rm -rf src
COPY src ./src
# The store's schema, embedded into the binary at compile time.
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin token-issuer \
 && strip target/release/token-issuer

FROM runtime
COPY --from=build /src/target/release/token-issuer /usr/local/bin/token-issuer
