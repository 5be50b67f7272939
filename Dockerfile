# keyhold in a container: build with the Rust toolchain, run as a non-root user on Debian slim.
#   docker build -t keyhold .
#   docker volume create keyhold-data
#   docker run --rm -v keyhold-data:/var/lib/keyhold keyhold init --data-dir /var/lib/keyhold --json
#   docker run -d -p 7443:7443 -v keyhold-data:/var/lib/keyhold keyhold
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p keyhold-cli

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/keyhold keyhold \
    && mkdir -p /var/lib/keyhold && chown keyhold:keyhold /var/lib/keyhold && chmod 0700 /var/lib/keyhold
COPY --from=build /src/target/release/keyhold /usr/local/bin/keyhold
USER keyhold
VOLUME /var/lib/keyhold
EXPOSE 7443
ENTRYPOINT ["/usr/local/bin/keyhold"]
CMD ["serve", "--data-dir", "/var/lib/keyhold", "--listen", "0.0.0.0:7443"]
