//! `GET /metrics` tells the stories: what the agent counted, scraped through the API and
//! parsed, agrees with the rows and the fleet's ledger.

use serde_json::Value;

use crate::fake_openai::{self, Scripted, tool_call_reply};
use crate::helpers::*;

/// The actions of `tool` across incidents that ended with `status`.
fn count(incidents: &[&Value], tool: &str, status: &str) -> f64 {
    incidents
        .iter()
        .map(|i| {
            actions(i, tool)
                .iter()
                .filter(|a| a["status"] == status)
                .count()
        })
        .sum::<usize>() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_both_stories_as_the_rows_tell_them() {
    // Goal: the counters say what happened. Method: the OOM story and the database story on
    // one agent; once both finished and their actors ended, scrape /metrics and compare with
    // the rows and the ledger: one restart made and verified healthy on the policy's `auto`
    // (runbook_grants_auto), one restart proposed for the database tier, a page per story,
    // every status entered once, nothing left in flight.
    let h = start(Options::default()).await;
    let before = h.scrape().await;
    assert_eq!(before.value("sre_admission_capacity", &[]), 11_000.0);
    assert_eq!(
        before.value("sre_incidents_opened_total", &[("source", "api")]),
        0.0
    );
    let pod = h.oom_killed_pod().await;
    let (oom, _) = h.post(OOM_ALERT, "checkout-api").await;
    let (outage, _) = h.post(DB_ALERT, "payments-db").await;
    let oom = h.finished(&oom).await;
    assert_oom_story(&h, &oom, &pod).await;
    let outage = h.finished(&outage).await;
    assert_db_story(&h, &outage).await;
    let m = h
        .scrape_until("no incident live", |m| {
            m.value("sre_incidents_live", &[]) == 0.0
        })
        .await;
    let both = [&oom, &outage];

    assert_eq!(
        m.value("sre_incidents_opened_total", &[("source", "api")]),
        2.0
    );
    assert_eq!(m.value("sre_incidents_queued", &[]), 0.0);
    for (status, n) in [
        ("analyzing", 2.0),
        ("remediating", 1.0),
        ("resolved", 1.0),
        ("escalated", 1.0),
        ("failed", 0.0),
    ] {
        assert_eq!(
            m.value("sre_incident_status_total", &[("status", status)]),
            n,
            "{status}"
        );
    }
    assert_eq!(m.value("sre_investigations_total", &[]), 2.0);
    assert_eq!(m.value("sre_investigations_in_flight", &[]), 0.0);

    let restarts = h.restarts_of("checkout-api").await.len() as f64;
    assert_eq!(restarts, 1.0);
    assert_eq!(
        m.value("sre_restarts_total", &[("outcome", "succeeded")]),
        restarts
    );
    assert_eq!(m.value("sre_restarts_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(
        m.value("sre_restarts_verified_total", &[("outcome", "healthy")]),
        1.0
    );
    assert_eq!(
        m.value("sre_restarts_verified_total", &[("outcome", "unhealthy")]),
        0.0
    );
    let pages = count(&both, "send-notification", "succeeded");
    assert!(pages >= 2.0, "a page per story");
    assert_eq!(
        m.value("sre_pages_total", &[("outcome", "succeeded")]),
        pages
    );
    assert_eq!(m.value("sre_pages_total", &[("outcome", "failed")]), 0.0);

    let decision = |tool: &str, decision: &str, reason: &str| {
        m.value(
            "sre_policy_decisions_total",
            &[("tool", tool), ("decision", decision), ("reason", reason)],
        )
    };
    assert_eq!(
        decision("restart-pod", "auto", "runbook_grants_auto"),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        decision("restart-pod", "proposed", "database_tier"),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum("sre_policy_decisions_total", &[("tool", "restart-pod")]),
        2.0,
        "no other restart decision"
    );

    // The rules reasoner: its turns, none in flight, no tokens (it has no model).
    assert!(
        m.value(
            "sre_model_turns_total",
            &[("reasoner", "rules"), ("outcome", "ok")]
        ) >= 2.0
    );
    assert_eq!(m.value("sre_model_turns_in_flight", &[]), 0.0);
    assert_eq!(m.sum("sre_model_tokens_total", &[]), 0.0);
    // Every tool call is measured once; the restart and the reads among them.
    assert_eq!(
        m.value(
            "sre_tool_call_duration_seconds_count",
            &[
                ("server", "remediation"),
                ("tool", "restart-pod"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert!(
        m.value(
            "sre_tool_call_duration_seconds_count",
            &[
                ("server", "observability"),
                ("tool", "get-metrics"),
                ("outcome", "ok")
            ]
        ) >= 2.0
    );
    assert_eq!(
        m.value("sre_db_write_duration_seconds_count", &[("op", "create")]),
        2.0
    );
    assert!(m.value("sre_db_write_duration_seconds_count", &[("op", "save")]) >= 4.0);
    if cfg!(target_os = "linux") {
        let rss = m.value("process_resident_memory_bytes", &[]);
        assert!(rss > 0.0);
        assert!(m.value("sre_process_resident_memory_peak_bytes", &[]) >= rss);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_investigation_past_its_token_budget_stops_escalates_and_acts_on_nothing() {
    // Goal: the per-incident token budget stops an investigation like the step budget does:
    // undetermined, escalated with the reason, nothing the turn that passed the budget asked
    // for acted on; the tokens the model reported are counted. Method: a model that maps the
    // alert, then asks for a restart, each answer reporting 576 tokens (512 prompt, 64
    // completion); the budget is 1,000, so the second answer, the restart's, passes it.
    let pod = expected_oom_pod();
    let restart = format!(r#"{{"podName":"{pod}"}}"#);
    let model = fake_openai::start_with(move |_request: &Value, index: usize| {
        Scripted::Reply(if index == 0 {
            tool_call_reply(
                &[(
                    "map-alert-to-service",
                    r#"{"alertType":"CheckoutApiOOMKilled"}"#,
                )],
                Some("Map it first."),
            )
        } else {
            tool_call_reply(
                &[
                    ("restart-pod", restart.as_str()),
                    ("get-metrics", r#"{"serviceName":"checkout-api"}"#),
                ],
                Some("Restart it straight away."),
            )
        })
    })
    .await;
    let mut flags = crate::stories::openai_flags(&model.base_url());
    flags.extend(["--tokens-per-incident-max".to_owned(), "1000".to_owned()]);
    let h = start(Options {
        flags,
        ..Options::default()
    })
    .await;
    let (id, _) = h.post(OOM_ALERT, "checkout-api").await;
    let incident = h.finished(&id).await;
    assert_eq!(incident["status"], "escalated", "{incident:#}");
    let summary = incident["rca_analysis"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("1152 tokens") && summary.contains("budget of 1000"),
        "{summary}"
    );
    assert!(actions(&incident, "restart-pod").is_empty(), "{incident:#}");
    assert!(h.restarts_of("checkout-api").await.is_empty());
    assert_eq!(model.requests().len(), 2, "no turn after the budget passed");
    let reasoner = format!("openai:{}", fake_openai::MODEL);
    let m = h
        .scrape_until("no incident live", |m| {
            m.value("sre_incidents_live", &[]) == 0.0
        })
        .await;
    assert_eq!(
        m.value(
            "sre_model_tokens_total",
            &[("reasoner", &reasoner), ("kind", "prompt")]
        ),
        1024.0
    );
    assert_eq!(
        m.value(
            "sre_model_tokens_total",
            &[("reasoner", &reasoner), ("kind", "completion")]
        ),
        128.0
    );
    assert_eq!(
        m.value(
            "sre_model_turns_total",
            &[("reasoner", &reasoner), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        m.value(
            "sre_model_turn_duration_seconds_count",
            &[("reasoner", &reasoner), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        m.value("sre_incident_status_total", &[("status", "escalated")]),
        1.0
    );
    h.stop().await;
}
