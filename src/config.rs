//! Configuration: command-line flags with environment fallbacks. Every bound and timeout is a
//! named field with its unit; nothing relies on a library's default.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};
pub use mcp::telemetry::LogFormat;

use crate::store::DbConfig;

#[derive(Debug, Parser)]
#[command(name = "sre-agent", version, about = "An AI site-reliability agent")]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (migrates the database first).
    Serve(ServeArgs),
    /// Bring the database schema up to date, then exit.
    Migrate(DbArgs),
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Log line format. The level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "SRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://FILE` (created when missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://sre-agent.db")]
    pub database_url: String,
    /// Most pooled database connections.
    #[arg(long, env = "SRE_DB_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
    /// How long a query waits for a free pooled connection.
    #[arg(long, env = "SRE_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_acquire_timeout_ms: u64,
    /// How long opening one database connection may take.
    #[arg(long, env = "SRE_DB_CONNECT_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_connect_timeout_ms: u64,
    /// How long SQLite waits on a locked database before failing a statement.
    #[arg(long, env = "SRE_SQLITE_BUSY_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sqlite_busy_timeout_ms: u64,
    /// Longest statement PostgreSQL runs before cancelling it.
    #[arg(long, env = "SRE_DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "SRE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "SRE_REQUEST_BODY_LIMIT_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub request_body_limit_bytes: u64,
    /// Longest time one request may take before it is answered 503.
    #[arg(long, env = "SRE_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may still run.
    #[arg(long, env = "SRE_SHUTDOWN_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..))]
    pub shutdown_grace_ms: u64,
    #[command(flatten)]
    pub db: DbArgs,
}

/// Bounds of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub request_body_limit_bytes: usize,
    /// Longest time one request may take.
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may still run.
    pub shutdown_grace_ms: u64,
}

/// Everything [`crate::app::Application::build`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: HttpConfig,
    pub db: DbConfig,
}

impl From<DbArgs> for DbConfig {
    fn from(a: DbArgs) -> Self {
        DbConfig {
            url: a.database_url,
            max_connections: a.db_max_connections,
            acquire_timeout_ms: a.db_acquire_timeout_ms,
            connect_timeout_ms: a.db_connect_timeout_ms,
            sqlite_busy_timeout_ms: a.sqlite_busy_timeout_ms,
            statement_timeout_ms: a.db_statement_timeout_ms,
        }
    }
}

impl From<ServeArgs> for Config {
    fn from(a: ServeArgs) -> Self {
        Config {
            listen: a.listen,
            http: HttpConfig {
                // Bounded to 64 MiB by the flag's parser, so this fits every usize.
                request_body_limit_bytes: a.request_body_limit_bytes as usize,
                request_timeout_ms: a.request_timeout_ms,
                shutdown_grace_ms: a.shutdown_grace_ms,
            },
            db: a.db.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_has_working_defaults() {
        let cli = Cli::try_parse_from(["sre-agent", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        let config = Config::from(args);
        assert_eq!(config.http.request_body_limit_bytes, 256 * 1024);
        assert!(config.db.url.starts_with("sqlite://"));
    }

    #[test]
    fn bad_values_are_refused_with_a_message() {
        for args in [
            ["sre-agent", "serve", "--listen", "not-an-address"],
            ["sre-agent", "serve", "--request-timeout-ms", "0"],
            ["sre-agent", "serve", "--db-max-connections", "-3"],
            ["sre-agent", "--log-format", "xml", "serve"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }
}
