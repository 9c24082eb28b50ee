//! The agent on PostgreSQL (the production backend): the stories, a kill mid-restart and
//! the storm, each in a fresh schema. Run when `TEST_DATABASE_URL` is set (CI sets it when
//! the machine's PostgreSQL answers); otherwise each test says so and returns.

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
    crate::storm::storm(Some(db.url.clone())).await;
}
