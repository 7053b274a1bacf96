# The factline services in one image; docker-compose.yml picks the binary per service.
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        cmake libssl-dev libsasl2-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p factline-schemas -p factline-registry -p factline-write-side -p factline-projectors -p factline-read-api \
    && mkdir /out \
    && cp target/release/factline-schemas target/release/factline-registry \
          target/release/factline-write-side target/release/factline-projector \
          target/release/factline-read-api /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 libsasl2-2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 factline
COPY --from=build /out/ /usr/local/bin/
COPY projectors/config /etc/factline/projectors
USER factline
