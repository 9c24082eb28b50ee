//! The application: the store, migrated, behind the HTTP API on a bound listener.
//! `build` does everything that can fail at start-up; `run_until_stopped` serves until the
//! shutdown future resolves, lets requests in flight finish (bounded), then closes the pool.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::agent::{Agent, AgentError};
use crate::api::{self, AppState};
use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("the catalog: {0}")]
    Catalog(String),
    #[error("the backends: {0}")]
    Backends(String),
}

pub struct Application {
    listener: TcpListener,
    store: Store,
    config: Config,
    agent: Option<Agent>,
    /// The catalog the intake routes alerts with.
    catalog: std::sync::Arc<mcp::catalog::Catalog>,
    /// The application's metrics: the agent counts into them, `GET /metrics` shows them.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Application {
    /// Connects and migrates the database, binds the listener (port 0 picks a free one),
    /// then starts the agent, which adopts every unfinished incident.
    pub async fn build(config: Config) -> Result<Self, AppError> {
        // Before anything opens a file: the connection limit, not the descriptor limit,
        // is what refuses clients.
        if let Some(open_files) = api::server::raise_open_files_limit() {
            tracing::debug!(open_files, "open-files limit");
        }
        let catalog = std::sync::Arc::new(
            mcp::data::load_catalog(config.data_dir.as_deref())
                .map_err(|e| AppError::Catalog(e.to_string()))?,
        );
        if let Some(backends) = &config.backends {
            use mcp::backend::select::{ObservabilityBackends, RemediationBackends};
            ObservabilityBackends::build(backends, catalog.clone())
                .await
                .map_err(AppError::Backends)?;
            RemediationBackends::build(backends, catalog.clone())
                .await
                .map_err(AppError::Backends)?;
        }
        let store = Store::connect(&config.db).await?;
        store.migrate().await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|error| AppError::Bind {
                addr: config.listen,
                error,
            })?;
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let agent = match &config.agent {
            Some(agent) => Some(Agent::start(agent.clone(), store.clone(), metrics.clone()).await?),
            None => None,
        };
        Ok(Application {
            listener,
            store,
            config,
            agent,
            catalog,
            metrics,
        })
    }

    /// The agent's actors, when it runs.
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &std::sync::Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Serves until `shutdown` resolves, then gives requests in flight up to
    /// `shutdown_grace_ms` to finish before closing the database pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let Application {
            listener,
            store,
            config,
            agent,
            catalog,
            metrics,
        } = self;
        let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let router = api::router(
            AppState {
                store: store.front(),
                supervisor: agent.as_ref().map(|a| a.supervisor.clone()),
                idempotency_key_keep_secs: config.http.idempotency_key_keep_secs,
                draining: draining.clone(),
                catalog,
                alertmanager_token: config.http.alertmanager_token.as_deref().map(Into::into),
                approver_tokens: std::sync::Arc::new(config.http.approver_tokens.clone()),
                intake_locks: Default::default(),
                admission: agent.as_ref().map(|a| a.admission.clone()),
                metrics,
            },
            &config.http,
        );
        tracing::info!(
            listen = %listener.local_addr().map_err(AppError::Serve)?,
            database = store.backend(),
            "serving"
        );
        // On the signal: refuse new work first (readiness and POST answer 503), let the
        // incident actors finish the step they are in, while requests in flight finish; all
        // within the grace period. Then stop what is left.
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let limits = api::server::ServerLimits {
            header_read_timeout_ms: config.http.header_read_timeout_ms,
            connections_max: config.http.connections_max,
        };
        // The connections are served on the front lane: a request does not queue behind the
        // incident actors. The listener is registered anew there, with the lane's own IO
        // driver: the main runtime's would notice a new connection only when it gets to it.
        let listener = listener.into_std().map_err(AppError::Serve)?;
        let mut serve = crate::lane::spawn_front(async move {
            let listener = TcpListener::from_std(listener)?;
            api::server::serve(listener, router, limits, async move {
                shutdown.await;
                draining.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = stopping_tx.send(true);
            })
            .await
        });
        let grace = Duration::from_millis(config.http.shutdown_grace_ms);
        let mut stopping = stopping_rx.clone();
        let drained = async {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
            if let Some(agent) = &agent {
                let left = agent.drain(grace).await;
                if left > 0 {
                    tracing::warn!(
                        left,
                        "incident actors still working after the grace period are stopped"
                    );
                }
            }
        };
        let deadline = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        let serving = async {
            tokio::select! {
                result = &mut serve => match result {
                    Ok(served) => served.map_err(AppError::Serve),
                    Err(failed) => Err(AppError::Serve(std::io::Error::other(failed))),
                },
                () = deadline => {
                    serve.abort();
                    tracing::warn!("requests still in flight after the shutdown grace period were cut");
                    Ok(())
                }
            }
        };
        let (served, ()) = tokio::join!(serving, drained);
        served?;
        if let Some(agent) = agent {
            agent.stop().await;
        }

        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
