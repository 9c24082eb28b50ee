//! `sre-agent eval`: scenario cases through the chosen reasoner. Each case runs on its own
//! simulated fleet (its faults injected), its own agent and its own SQLite file: the alert
//! is posted, the incident followed to its end, and what was done is read from the fleet's
//! ledger (never from what the agent says it did) and scored ([`case::score`]).

pub mod case;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::config::{EvalArgs, LogFormat};
use crate::embedded::{Simulated, ledger, post_incident, wait_terminal};
use case::{Case, Executed, Scored};

/// How the run went, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    AllCorrect,
    SomeWrong,
    Unsafe,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::AllCorrect => 0,
            Verdict::SomeWrong => 1,
            Verdict::Unsafe => 3,
        }
    }
}

pub async fn run(args: EvalArgs, program: &Path, log_format: LogFormat) -> anyhow::Result<Verdict> {
    let mut cases = load(args.cases.as_deref())?;
    if !args.only.is_empty() {
        for name in &args.only {
            if !cases.iter().any(|c| &c.name == name) {
                bail!("--case {name:?}: no case of that name");
            }
        }
        cases.retain(|c| args.only.contains(&c.name));
    }
    let catalog = mcp::data::load_catalog(args.serve.agent.data_dir.as_deref())
        .map_err(anyhow::Error::msg)?;
    let stateless = |pod: &str| {
        catalog.service_names().any(|name| {
            catalog.service(name).is_some_and(|s| {
                s.tier == mcp::catalog::Tier::Stateless
                    && s.pod_patterns()
                        .iter()
                        .any(|p| mcp::catalog::glob_matches(p, pod))
            })
        })
    };
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "eval: {} case(s), reasoner {}",
        cases.len(),
        reasoner_label(&args)
    ));
    let begun = Instant::now();
    let mut scored = Vec::with_capacity(cases.len());
    for case in &cases {
        let started = Instant::now();
        // A case that cannot run is a wrong case, not the end of the eval: an unsafe
        // action in another case must still be reported.
        let (executed, status) = match run_case(case, &args, program, log_format).await {
            Ok(done) => done,
            Err(error) => (
                Executed {
                    restarts: vec![],
                    pages: 0,
                },
                format!("did not run: {error:#}"),
            ),
        };
        let s = case::score(case, executed, &status, stateless);
        say(line(&s, started.elapsed()));
        scored.push(s);
    }
    let correct = scored.iter().filter(|s| s.correct).count();
    let unsafe_cases = scored
        .iter()
        .filter(|s| !s.unsafe_actions.is_empty())
        .count();
    let verdict = if unsafe_cases > 0 {
        Verdict::Unsafe
    } else if correct == scored.len() {
        Verdict::AllCorrect
    } else {
        Verdict::SomeWrong
    };
    if args.json {
        println!(
            "{}",
            json!({
                "reasoner": reasoner_label(&args),
                "cases": scored,
                "correct": correct,
                "unsafe": unsafe_cases,
                "total": scored.len(),
                "seconds": begun.elapsed().as_secs_f64(),
                "matrix": case::matrix(&scored)
                    .into_iter()
                    .map(|((expected, executed), n)| json!({"expected": expected, "executed": executed, "cases": n}))
                    .collect::<Vec<_>>(),
            })
        );
    } else {
        println!("\n{}", case::render_matrix(&scored));
        println!(
            "{correct} of {} correct, {unsafe_cases} with an unsafe action, in {:.0} s",
            scored.len(),
            begun.elapsed().as_secs_f64()
        );
    }
    Ok(verdict)
}

/// `rules` or `openai:{model}`.
fn reasoner_label(args: &EvalArgs) -> String {
    match args.serve.agent.reasoner {
        crate::config::ReasonerKind::Rules => "rules".into(),
        crate::config::ReasonerKind::Openai => format!("openai:{}", args.serve.agent.llm_model),
    }
}

/// The cases of `dir` (every `*.toml`, by file name), or the shipped ones.
fn load(dir: Option<&Path>) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    match dir {
        None => {
            for (file, text) in case::SHIPPED {
                cases.push(case::parse(file, text).map_err(anyhow::Error::msg)?);
            }
        }
        Some(dir) => {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            for path in files {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                cases.push(
                    case::parse(&path.display().to_string(), &text).map_err(anyhow::Error::msg)?,
                );
            }
        }
    }
    if cases.is_empty() {
        bail!("no cases to run");
    }
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("two cases are named {:?}", w[0]);
    }
    Ok(cases)
}

/// One case on its own fleet and agent: what the ledger shows was done, and the incident's
/// last status (`timed out (…)` when it did not finish in time).
async fn run_case(
    case: &Case,
    args: &EvalArgs,
    program: &Path,
    log_format: LogFormat,
) -> anyhow::Result<(Executed, String)> {
    let scenarios: Vec<&str> = case.scenarios.iter().map(String::as_str).collect();
    let sim = Simulated::start(
        &scenarios,
        &args.serve,
        program,
        log_format,
        "sre-agent-eval",
    )
    .await?;
    let outcome = follow(case, &sim.agent.api, &sim.fleet.url, args.wait_ms).await;
    sim.stop(false).await;
    outcome
}

/// Posts the case's alert, waits for its incident to end, reads the ledger.
async fn follow(
    case: &Case,
    api: &str,
    fleet: &str,
    wait_ms: u64,
) -> anyhow::Result<(Executed, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for pod in &case.restarted_by_hand {
        let response = http
            .post(format!("{fleet}/v1/pods/{pod}/restart"))
            .json(&json!({}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "restarting {pod} by hand: the fleet answered {}",
                response.status()
            );
        }
    }
    let posted = post_incident(&http, api, &case.alert).await?;
    let status = match wait_terminal(&http, api, &posted.id, wait_ms).await? {
        Ok(incident) => incident["status"].as_str().unwrap_or("?").to_owned(),
        Err(incident) => format!("timed out ({})", incident["status"].as_str().unwrap_or("?")),
    };
    let ledger = ledger(&http, fleet).await?;
    Ok((executed(&ledger, &posted.trace_id), status))
}

/// What the ledger shows the agent did for the incident of `trace`.
fn executed(ledger: &[mcp::fleet::model::LedgerEntry], trace: &str) -> Executed {
    let ours = || {
        ledger
            .iter()
            .filter(|e| e.trace_id.as_deref() == Some(trace))
    };
    Executed {
        restarts: ours()
            .filter(|e| e.action == "restart-pod")
            .map(|e| e.target.clone())
            .collect(),
        pages: ours().filter(|e| e.action == "send-notification").count(),
    }
}

/// One case as a line: right or not, expected, done, the status, anything unsafe.
fn line(s: &Scored, took: Duration) -> String {
    let mark = if !s.unsafe_actions.is_empty() {
        "UNSAFE"
    } else if s.correct {
        "ok"
    } else {
        "WRONG"
    };
    let expected = match &s.expected {
        case::Expected::Restart { pod } => format!("restart {pod}"),
        other => other.label().to_owned(),
    };
    let done = if s.executed.restarts.is_empty() {
        s.executed.label().to_owned()
    } else {
        format!("restart {}", s.executed.restarts.join(", "))
    };
    let mut text = format!(
        "{mark:<6} {:<26} expected {expected:<36} done {done} ({} page(s)), {} in {:.1} s",
        s.name,
        s.executed.pages,
        s.status,
        took.as_secs_f64()
    );
    for why in &s.unsafe_actions {
        text.push_str(&format!("\n       unsafe: {why}"));
    }
    text
}
