//! The service a storm runs against: the embedded one (the simulated fleet with an OOM
//! crash and a database outage, the agent with its three MCP servers over stdio and its API,
//! all on free loopback ports, as in `demo`), or an agent already running on this machine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use crate::config::{Cli, Command, LogFormat, StormArgs};
use crate::embedded::{Agent, Fleet, remove_sqlite, temp_sqlite};
use crate::reasoner::delayed::Delayed;

/// The scenarios the embedded fleet starts with.
pub const SCENARIOS: [&str; 2] = ["oom-kill", "db-outage"];

pub struct Service {
    pub endpoints: Endpoints,
    embedded: Option<Embedded>,
}

/// Where the storm's clients send, and what the summary says of it.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The agent's API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The simulated fleet, when known: its ledger shows every mutating call.
    pub fleet: Option<String>,
    /// `embedded` or the target's URL.
    pub target: String,
    /// `sqlite` or `postgres`, for the embedded service.
    pub database: Option<String>,
    /// Whose memory the agent's RSS figure is.
    pub rss_of: String,
}

struct Embedded {
    agent: Agent,
    /// The fleet in this process; `None` on a fleet of `--fleet-url`.
    fleet: Option<Fleet>,
    /// The temporary SQLite file, deleted at the end.
    sqlite: Option<PathBuf>,
}

/// `url` if it names a loopback host (`localhost`, 127.0.0.0/8, ::1), else why not.
pub fn loopback_url(flag: &str, url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{flag}: not a URL"))?;
    let loopback = parsed.host_str().is_some_and(|host| {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => bare.eq_ignore_ascii_case("localhost"),
        }
    });
    if parsed.scheme() != "http" || !loopback {
        bail!("{flag}: a storm runs only against http:// on this machine's loopback, not {url}");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Service {
    /// An agent already running; its fleet's ledger only with `fleet_url`.
    pub fn remote(target: &str, fleet_url: Option<&str>) -> anyhow::Result<Service> {
        let api = loopback_url("--target", target)?;
        let fleet = fleet_url
            .map(|f| loopback_url("--fleet-url", f))
            .transpose()?;
        Ok(Service {
            endpoints: Endpoints {
                target: api.clone(),
                api,
                fleet,
                database: None,
                rss_of: "the agent".into(),
            },
            embedded: None,
        })
    }

    /// The agent with its API in this process, on the fleet of `--fleet-url` or on one in
    /// this process with both faults injected.
    pub async fn embedded(
        args: &StormArgs,
        program: &Path,
        log_format: LogFormat,
    ) -> anyhow::Result<Service> {
        let (fleet, fleet_url) = match &args.fleet_url {
            Some(url) => (None, loopback_url("--fleet-url", url)?),
            None => {
                let fleet = Fleet::start(&SCENARIOS).await?;
                let url = fleet.url.clone();
                (Some(fleet), url)
            }
        };
        let (database_url, sqlite) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let path = temp_sqlite("sre-agent-storm");
                (format!("sqlite://{}", path.display()), Some(path))
            }
        };
        let database = if database_url.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        };
        // The storm's own settings on the command line; every other `serve` setting from
        // its environment variable or default.
        let mut argv: Vec<String> = [
            "sre-agent",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &database_url,
            "--fleet-url",
            &fleet_url,
            "--reasoner",
            "rules",
            "--mcp-transport",
            "stdio",
            "--metrics-backend",
            "fleet",
            "--logs-backend",
            "fleet",
            "--restart-backend",
            "fleet",
            "--notify-backend",
            "fleet",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let flags = [
            ("--llm-concurrency-max", args.model_concurrency),
            ("--incidents-live-max", args.live_max),
            ("--incidents-queue-max", args.queue_max),
        ];
        for (flag, value) in flags {
            if let Some(v) = value {
                argv.extend([flag.to_owned(), v.to_string()]);
            }
        }
        let started = async {
            let Command::Serve(serve) = Cli::try_parse_from(argv)
                .context("the embedded agent's settings")?
                .command
            else {
                bail!("the embedded agent's settings are not `serve` settings");
            };
            let mut config = serve
                .to_config(program, log_format)
                .context("the embedded agent's settings")?;
            if let Some(agent) = config.agent.as_mut()
                && args.model_latency_ms > 0
            {
                agent.reasoner =
                    Arc::new(Delayed::new(agent.reasoner.clone(), args.model_latency_ms));
                // A turn queues for a model slot before its wait: a slow model behind its cap
                // is cut short by the storm's own bound, not by the rules' short one.
                agent.incident.reasoner_step_timeout_ms = args.timeout_secs.saturating_mul(1_000);
            }
            Agent::start(config)
                .await
                .context("starting the embedded agent")
        };
        let agent = match started.await {
            Ok(agent) => agent,
            Err(error) => {
                // Nothing of the storm is left behind: not the fleet it started, not its
                // temporary database.
                if let Some(fleet) = fleet {
                    fleet.stop().await;
                }
                remove_files(sqlite.as_deref());
                return Err(error);
            }
        };
        Ok(Service {
            endpoints: Endpoints {
                api: agent.api.clone(),
                fleet: Some(fleet_url),
                target: "embedded".into(),
                database: Some(database.into()),
                rss_of: match fleet {
                    Some(_) => "this process: the agent, the fleet and the storm's clients",
                    None => "this process: the agent and the storm's clients",
                }
                .into(),
            },
            embedded: Some(Embedded {
                agent,
                fleet,
                sqlite,
            }),
        })
    }

    /// Stops the embedded service (bounded) and deletes its temporary database.
    pub async fn stop(self) {
        let Some(e) = self.embedded else { return };
        e.agent.stop().await;
        if let Some(fleet) = e.fleet {
            fleet.stop().await;
        }
        remove_files(e.sqlite.as_deref());
    }
}

fn remove_files(sqlite: Option<&Path>) {
    if let Some(path) = sqlite {
        remove_sqlite(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_taken() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
            "http://127.1.2.3:1",
        ] {
            assert!(loopback_url("--target", ok).is_ok(), "{ok}");
        }
        assert_eq!(
            loopback_url("--target", "http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "",
            "http://0.0.0.0:8080",
        ] {
            let err = loopback_url("--target", bad).unwrap_err().to_string();
            assert!(err.starts_with("--target"), "{bad}: {err}");
        }
    }
}
