//! `sre-agent storm`: a storm of alerts against the agent, with figures, from nothing but
//! this binary.
//!
//! The pure parts: [`plan`] (which alerts, in which requests, describing how many
//! failures), [`stats`] (exact quantiles, rates, repeated keys), [`exposition`] (the
//! agent's `GET /metrics` text, read tolerantly), [`report`] (the figures, the verdict, the
//! table and the JSON). The IO shell: [`service`] (the embedded fleet and agent, or a
//! running agent on loopback) and [`client`] (senders, prober, scrapes, listings); this
//! module runs them: start, send every firing request, then the resolving ones, wait until
//! every incident named by an answer is terminal (or the timeout), read the rows, the
//! metrics and the ledger, print, stop.

pub mod client;
pub mod exposition;
pub mod plan;
pub mod report;
pub mod service;
pub mod stats;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::watch;

use crate::config::{LogFormat, StormArgs};
use client::{Client, Gathered};
use exposition::{Exposition, Label};
use plan::{Phase, Plan};
use report::{Observed, Summary};
use service::{Endpoints, Service};

/// Longest a service gets to answer `GET /readyz` before the storm begins.
const READY_WAIT_MS: u64 = 60_000;
/// How often the storm scrapes the agent's metrics and shows its progress.
const WATCH_INTERVAL_MS: u64 = 1_000;
/// Plain progress lines (no terminal): one a second for this many, then one every
/// [`PLAIN_SLOW_INTERVAL_MS`], so a long storm prints a bounded number of lines.
const PLAIN_FAST_LINES_MAX: u64 = 60;
const PLAIN_SLOW_INTERVAL_MS: u64 = 10_000;
/// How often the storm looks for unfinished incidents once every alert is sent.
const POLL_INTERVAL_MS: u64 = 500;

const TERMINAL: [&str; 3] = ["resolved", "escalated", "failed"];

pub async fn run(args: StormArgs, program: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    let run_id = run_id();
    let plan = Arc::new(Plan::new(
        usize::try_from(args.alerts)?,
        args.failures.map(usize::try_from).transpose()?,
        run_id,
    )?);
    let service = match &args.target {
        Some(target) => Service::remote(target, args.fleet_url.as_deref())?,
        None => Service::embedded(&args, program, log_format).await?,
    };
    // The storm's clients run on a lane of their own, as a load generator in another
    // process would: what they measure is the agent's answer, not their own wait behind the
    // embedded agent's tasks.
    let clients = crate::lane::Lane::start("storm-clients")?;
    let outcome = clients
        .spawn({
            let (args, endpoints) = (args.clone(), service.endpoints.clone());
            async move { storm(&args, plan, &endpoints).await }
        })
        .await
        .unwrap_or_else(|failed| Err(anyhow::anyhow!("the storm's clients failed: {failed}")));
    drop(clients);
    service.stop().await;
    let summary = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if !summary.ok {
        bail!("the storm failed: {}", summary.problems.join("; "));
    }
    Ok(())
}

/// Tells this storm's alerts and keys from another's.
fn run_id() -> u64 {
    let micros = chrono::Utc::now().timestamp_micros() as u64;
    micros ^ (u64::from(std::process::id()) << 40)
}

async fn storm(args: &StormArgs, plan: Arc<Plan>, service: &Endpoints) -> anyhow::Result<Summary> {
    let concurrency = usize::try_from(args.concurrency)?;
    let client = Client::new(&service.api, concurrency + 32)?;
    if !client.ready(Duration::from_millis(READY_WAIT_MS)).await {
        bail!(
            "{} did not answer GET /readyz with 200 within {READY_WAIT_MS} ms",
            service.api
        );
    }
    let before = client.metrics().await;
    if before.is_none() {
        eprintln!(
            "storm: {}/metrics cannot be read: the agent's own figures are n/a",
            service.api
        );
    }
    let g = Arc::new(Gathered::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = chrono::Utc::now();
    let begun = Instant::now();
    let deadline = begun + Duration::from_secs(args.timeout_secs);
    let prober = tokio::spawn({
        let (client, g, stop) = (client.clone(), g.clone(), stop_rx.clone());
        let rate = args.probe_rate_per_sec;
        async move { client.probe(rate, g, stop).await }
    });
    let watcher = tokio::spawn(watch_progress(
        client.clone(),
        g.clone(),
        before.clone(),
        plan.alerts() as u64,
        stop_rx,
    ));

    for phase in [Phase::Firing, Phase::Resolving] {
        client
            .send_phase(
                plan.clone(),
                phase,
                concurrency,
                started,
                deadline,
                g.clone(),
            )
            .await;
    }

    // Until every incident an answer named is terminal, or the deadline.
    let ids = g.ids();
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    let mut timed_out = g.deadline_passed.load(Ordering::Relaxed);
    let rows = loop {
        let late = Instant::now() >= deadline;
        if late || client.unfinished(&wanted).await == 0 {
            let rows = client.rows(&ids, started).await;
            let done = rows
                .iter()
                .all(|r| r.status.as_deref().is_some_and(|s| TERMINAL.contains(&s)));
            if done || late {
                timed_out |= !done;
                break rows;
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    };
    let _ = stop_tx.send(true);
    let _ = prober.await;
    let Sampled {
        rss_max: rss_sampled_max,
        live_max: live_sampled_max,
    } = watcher.await.unwrap_or_default();
    let after = client.metrics().await;
    let ledger = match &service.fleet {
        Some(fleet) => client.ledger(fleet).await,
        None => None,
    };
    let (errors, more) = g.errors();
    for e in &errors {
        eprintln!("storm: {e}");
    }
    if more > 0 {
        eprintln!("storm: and {more} more errors like these");
    }
    let take = |m: &std::sync::Mutex<stats::Samples>| {
        std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let observed = Observed {
        target: service.target.clone(),
        database: service.database.clone(),
        mode: plan.mode().into(),
        alerts: plan.alerts() as u64,
        failures: plan.failures() as u64,
        concurrency: args.concurrency,
        model_latency_ms: args.model_latency_ms,
        alerts_sent: g.alerts_sent.load(Ordering::Relaxed),
        undelivered: g.undelivered.load(Ordering::Relaxed),
        refused: g.refused.load(Ordering::Relaxed),
        answered_opened: g.opened.load(Ordering::Relaxed),
        answered_coalesced: g.coalesced.load(Ordering::Relaxed),
        metrics_before: before,
        metrics_after: after,
        rss_sampled_max,
        live_sampled_max,
        rss_of: service.rss_of.clone(),
        rows,
        ledger,
        post: take(&g.post),
        get: take(&g.get),
        first_post: Some(started),
        timed_out,
    };
    Ok(Summary::of(&observed))
}

/// Incidents finished since `before`: terminal status changes the metrics counted.
fn finished(before: Option<&Exposition>, now: &Exposition) -> Option<f64> {
    let terminal = [Label::In("status", &TERMINAL)];
    let after = now.sum("sre_incident_status_total", &terminal)?;
    let before = before
        .and_then(|b| b.sum("sre_incident_status_total", &terminal))
        .unwrap_or(0.0);
    Some((after - before).max(0.0))
}

/// The highest figures scraped during a storm.
#[derive(Default)]
struct Sampled {
    /// `process_resident_memory_bytes`.
    rss_max: Option<f64>,
    /// `sre_incidents_live`.
    live_max: Option<f64>,
}

/// Scrapes the metrics every second until `stop`: the highest resident memory and live
/// incidents seen, and the progress, as a bar on a terminal or as plain lines (bounded)
/// otherwise.
async fn watch_progress(
    client: Client,
    g: Arc<Gathered>,
    before: Option<Exposition>,
    alerts: u64,
    mut stop: watch::Receiver<bool>,
) -> Sampled {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(alerts);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} alerts {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut plain_lines = 0u64;
    let begun = Instant::now();
    let mut last_plain: Option<Instant> = None;
    let mut sampled = Sampled::default();
    let mut tick = tokio::time::interval(Duration::from_millis(WATCH_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let now = client.metrics().await;
        let highest =
            |seen: Option<f64>, name: &str| match now.as_ref().and_then(|m| m.sum(name, &[])) {
                Some(v) => Some(seen.map_or(v, |m| m.max(v))),
                None => seen,
            };
        sampled.rss_max = highest(sampled.rss_max, "process_resident_memory_bytes");
        sampled.live_max = highest(sampled.live_max, "sre_incidents_live");
        let finished = now.as_ref().and_then(|n| finished(before.as_ref(), n));
        let sent = g.alerts_sent.load(Ordering::Relaxed) + g.undelivered.load(Ordering::Relaxed);
        let secs = begun.elapsed().as_secs_f64().max(0.001);
        let message = format!(
            "· {} incidents finished of {} · {:.0} alerts/s · refused {}",
            finished.map_or_else(|| "?".to_owned(), |f| format!("{f:.0}")),
            g.ids().len(),
            sent as f64 / secs,
            g.refused.load(Ordering::Relaxed)
        );
        match &bar {
            Some(bar) => {
                bar.set_position(sent);
                bar.set_message(message);
            }
            None => {
                let every = if plain_lines < PLAIN_FAST_LINES_MAX {
                    WATCH_INTERVAL_MS
                } else {
                    PLAIN_SLOW_INTERVAL_MS
                };
                // A tick may come a little early: a line is due within 10% of its interval.
                if last_plain.is_none_or(|t| t.elapsed().as_millis() as u64 >= every * 9 / 10) {
                    last_plain = Some(Instant::now());
                    plain_lines += 1;
                    eprintln!(
                        "storm {:>6.1} s: {sent}/{alerts} alerts sent {message}",
                        secs
                    );
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    sampled
}
