//! The agent on PostgreSQL (the production backend): the stories, a kill mid-restart, the
//! storm and the admission flood, each in a fresh schema. Run when `TEST_DATABASE_URL` is
//! set (CI sets it when the machine's PostgreSQL answers); otherwise each test says so and
//! returns.

use crate::db::{Backend, TestDb};
use crate::helpers::*;
use crate::reliability::{Moment, killed_mid_restart};

async fn postgres() -> Option<TestDb> {
    if std::env::var_os("TEST_DATABASE_URL").is_none() {
        eprintln!("TEST_DATABASE_URL is unset: not run on PostgreSQL");
        return None;
    }
    Some(TestDb::new(Backend::Postgres).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stories_end_as_promised_on_postgresql() {
    // Goal: the two stories on the production backend. Method: as on SQLite.
    let Some(db) = postgres().await else { return };
    let h = start(Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    })
    .await;
    let pod = h.oom_killed_pod().await;
    let (oom, _) = h.post(OOM_ALERT, "checkout-api").await;
    let (outage, _) = h.post(DB_ALERT, "payments-db").await;
    let oom = h.finished(&oom).await;
    assert_oom_story(&h, &oom, &pod).await;
    let outage = h.finished(&outage).await;
    assert_db_story(&h, &outage).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_killed_after_the_restart_call_resumes_on_postgresql() {
    // Goal and method: as the SQLite test of the same name, on PostgreSQL.
    let Some(db) = postgres().await else { return };
    killed_mid_restart(Moment::AfterCall, Some(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_two_hundred_incidents_finishes_on_postgresql() {
    // Goal and method: as the SQLite storm, with PostgreSQL's concurrent writers.
    let Some(db) = postgres().await else { return };
    crate::storm::storm(Some(db.url.clone()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_bounds_is_refused_and_every_accepted_incident_is_handled_on_postgresql() {
    // Goal and method: as the SQLite flood of the same name, on PostgreSQL.
    let Some(db) = postgres().await else { return };
    crate::admission::flood(Some(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_survives_postgresql_ending_the_agents_connections_every_50_ms() {
    // Goal: connection losses are operating errors, not failures: while PostgreSQL ends the
    // agent's backends ("terminating connection due to administrator command") every 50 ms,
    // no request gets a 5xx, no incident ends failed, and every incident reaches a human.
    // Method: the agent on its own schema and application name; a second connection calls
    // pg_terminate_backend on that name in a loop while 60 incidents are posted (a client
    // that gets 503 waits its Retry-After and tries again, as Alertmanager does); then the
    // loop stops and every incident must finish.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use sea_orm::{ConnectionTrait, Database};
    use serde_json::json;

    let Some(db) = postgres().await else { return };
    let name = format!("sre-agent-chaos-{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}&application_name={name}", db.url);
    let h = start(Options {
        database_url: Some(url),
        ..Options::default()
    })
    .await;
    let admin = Database::connect(std::env::var("TEST_DATABASE_URL").unwrap().as_str())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (stop, terminated) = (stop.clone(), terminated.clone());
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE application_name = '{name}'"
        );
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(Some(row)) = admin
                    .query_one_raw(sea_orm::Statement::from_string(
                        admin.get_database_backend(),
                        sql.clone(),
                    ))
                    .await
                {
                    let n: i64 = row.try_get("", "n").unwrap_or(0);
                    terminated.fetch_add(n as usize, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = admin.close().await;
        })
    };

    let (mut ids, mut unavailable, mut errors) = (Vec::new(), 0, Vec::new());
    for i in 0..60 {
        let (alert, service) = if i % 2 == 0 {
            (OOM_ALERT, "checkout-api")
        } else {
            (DB_ALERT, "payments-db")
        };
        let body = json!({
            "title": format!("{alert} #{i}"),
            "severity": "critical",
            "alert_type": alert,
            "service": service,
            "coalesce": false,
        });
        let mut attempts = 0;
        loop {
            attempts += 1;
            let response = h
                .http
                .post(format!("{}/incidents", h.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                202 => {
                    let v: serde_json::Value = response.json().await.unwrap();
                    ids.push(v["id"].as_str().unwrap().to_owned());
                    break;
                }
                // The service retries a dropped connection itself: a 503 here would mean
                // the database was away for its whole budget, which a 50 ms fault is not.
                503 if attempts < 50 => {
                    unavailable += 1;
                    assert!(response.headers().contains_key("retry-after"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => {
                    errors.push(format!("{other}: {}", response.text().await.unwrap()));
                    break;
                }
            }
        }
    }
    // Let the actors work under the same fire for a moment, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    killer.await.unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        unavailable, 0,
        "no 5xx: a dropped connection is retried on another"
    );
    assert!(
        terminated.load(Ordering::Relaxed) > 10,
        "the loop did end connections: {}",
        terminated.load(Ordering::Relaxed)
    );
    let mut failed = Vec::new();
    for id in &ids {
        let incident = h.finished(id).await;
        if incident["status"] == "failed" {
            failed.push(incident.clone());
        }
        let told = actions(&incident, "send-notification")
            .iter()
            .any(|n| n["status"] == "succeeded");
        assert!(told, "incident not paged: {incident:#}");
    }
    assert!(failed.is_empty(), "{failed:#?}");
    eprintln!(
        "{} incidents, {} backends ended, {unavailable} answers 503, 0 failed",
        ids.len(),
        terminated.load(Ordering::Relaxed)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifteen_second_database_outage_answers_503_and_everything_finishes_after_it() {
    // Goal: while the database is unreachable for 15 s, clients get 503 with Retry-After
    // (never a 500) and lose nothing; incidents caught mid-work wait and finish once it is
    // back, none failed. Method: the agent reaches PostgreSQL through a TCP proxy that the
    // test cuts for 15 s (every connection ended, new ones refused) while incidents are
    // being handled and more are posted; then the proxy lets connections through again.
    use std::time::{Duration, Instant};

    use serde_json::json;

    let Some(db) = postgres().await else { return };
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = crate::tcp_proxy::Proxy::start(upstream).await;
    url.set_port(Some(proxy.addr.port())).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    let h = start(Options {
        database_url: Some(url.to_string()),
        flags: [
            "--db-acquire-timeout-ms",
            "2000",
            "--db-connect-timeout-ms",
            "2000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        ..Options::default()
    })
    .await;
    let body = |i: usize| {
        json!({
            "title": format!("incident {i}"),
            "severity": "critical",
            "alert_type": if i.is_multiple_of(2) { OOM_ALERT } else { DB_ALERT },
            "coalesce": false,
        })
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = h
            .http
            .post(format!("{}/incidents", h.api))
            .json(&body(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    proxy.cut();
    let outage = Instant::now();
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(15) {
        let r = h
            .http
            .post(format!("{}/incidents", h.api))
            .json(&body(100 + refused))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
        assert!(r.headers().contains_key("retry-after"));
        refused += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.restore();
    for id in &ids {
        let incident = h.finished(id).await;
        assert_ne!(incident["status"], "failed", "{incident:#}");
        assert!(
            actions(&incident, "send-notification")
                .iter()
                .any(|n| n["status"] == "succeeded"),
            "{incident:#}"
        );
    }
    // Nothing refused was stored: only the 20 accepted incidents exist.
    let list = h.get_json(&format!("{}/incidents?limit=200", h.api)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), ids.len());
    eprintln!(
        "{refused} POSTs answered 503 during the outage; {} incidents finished after it",
        ids.len()
    );
    h.stop().await;
}
