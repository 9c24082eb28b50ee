# The agent as one image: `sre-agent serve` spawns its three MCP servers from the same
# binary (`sre-agent mcp …`), with the catalog, runbooks and scenarios compiled in.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sre-agent --bin sre-agent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home sre
COPY --from=build /src/target/release/sre-agent /usr/local/bin/sre-agent
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sre-agent"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
