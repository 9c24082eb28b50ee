//! The intake: alerts in, one failure one incident. An alert (from Alertmanager's webhook,
//! or a report through `POST /incidents`) is routed to a service with the agent's catalog
//! (the mapping server's data: the alert type, else its labels), which gives its failure
//! key (`core::alerts::failure_key`); the store records it on the open incident of that
//! failure or opens one; the supervisor is told after the commit, with the admission slot of
//! an incident opened. A thin IO shell around `core::alerts` and `Store::take_alert`.
//!
//! The investigation does not trust this routing: the incident's actor maps the alert again
//! through `map-alert-to-service`, and the policy checks every target against the
//! platform's facts. Routing here only decides which alerts count as one failure.

pub mod alertmanager;

use std::sync::Arc;

use mcp::catalog::{AlertMapping, Catalog};
use ractor::ActorRef;
use uuid::Uuid;

use crate::agent::admission::{Admission, Slot};
use crate::agent::supervisor::SupervisorMsg;
use crate::core::alerts::{self, AlertEvent};
use crate::incident::NewIncident;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, Taken};
use crate::trace::TraceId;

/// What the intake did with one alert, as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Received {
    pub fingerprint: String,
    pub status: &'static str,
    /// `opened`, `joined`, `resolved`, `refired`, `reported`, `unchanged` (an exact repeat:
    /// nothing written), `dropped` (a new alert of an incident that already tracks
    /// `ALERTS_TRACKED_MAX`: not recorded) or `no-incident` (a resolved alert no open
    /// incident knows).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<Uuid>,
    /// The failure it was counted under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// What the intake needs: the store, the supervisor to tell, the catalog to route with.
#[derive(Clone)]
pub struct Intake {
    pub store: Store,
    /// `None` runs the API alone (no agent).
    pub supervisor: Option<ActorRef<SupervisorMsg>>,
    pub catalog: Arc<Catalog>,
    /// One lock per failure key: the alerts of one failure are recorded one at a time in
    /// this process (the store's compare-and-swap settles races between processes).
    pub locks: Arc<crate::locks::KeyedLocks>,
    /// The agent's slots; `None` without an agent.
    pub admission: Option<Arc<Admission>>,
    pub metrics: Arc<Metrics>,
}

impl Intake {
    /// The service and failure class of an alert, from its type and its labels (with the
    /// incident's own service added as the `service` label when the labels name none).
    pub fn route(&self, event: &AlertEvent, service: Option<&str>) -> Option<AlertMapping> {
        let labels = crate::reasoner::labels_with_service(&event.labels, service);
        self.catalog.route(&event.alertname, &labels).ok()
    }

    /// Records one alert: on the open incident of its failure, or on a new incident
    /// (`new`, with a fresh trace id) when none is open and the alert fires or is a report.
    /// The supervisor hears of every incident opened or changed, after the commit. An
    /// incident opened takes `slot` (the API's, taken before), else a slot past the capacity:
    /// the webhook refuses a delivery only before it records anything, when the agent is
    /// already full, so it goes past the capacity by at most the alerts of the deliveries in
    /// flight (each at most `ALERTS_PER_DELIVERY_MAX`). A slot not used is given back.
    pub async fn take(
        &self,
        event: AlertEvent,
        mut new: NewIncident,
        trace_id: TraceId,
        slot: Option<Slot>,
    ) -> Result<(Received, Option<crate::incident::Incident>), StoreError> {
        let route = self.route(&event, new.service.as_deref());
        if new.service.is_none() {
            new.service = route.as_ref().map(|m| m.service.clone());
        }
        let key = alerts::failure_key(
            route
                .as_ref()
                .map(|m| (m.service.as_str(), m.class.as_str())),
            &event,
        );
        let received = |outcome, incident| Received {
            fingerprint: event.fingerprint.clone(),
            status: event.state.as_str(),
            outcome,
            incident,
            failure: key.clone(),
        };
        let Some(key) = key.clone() else {
            // Nothing to coalesce on: a report with no alert type opens its own incident.
            let creating = self.store.create_incident(new, &trace_id);
            let incident = self.metrics.db_write_timed("create", creating).await?;
            self.metrics.incident_opened(event.source);
            self.metrics.alert_received(event.source, "opened");
            self.spawn(incident.id, self.slot(slot));
            return Ok((received("opened", Some(incident.id)), Some(incident)));
        };
        let taken = {
            let _one_at_a_time = self.locks.lock(&key).await;
            let taking = self
                .store
                .take_alert(&key, &event, || (new.clone(), trace_id.clone()));
            self.metrics.db_write_timed("take_alert", taking).await?
        };
        let (outcome, id, opened) = match taken {
            Taken::Opened(incident) => ("opened", Some(incident.id), Some(*incident)),
            Taken::Joined { id, change } => (change.as_str(), Some(id), None),
            Taken::Unchanged { id } => ("unchanged", Some(id), None),
            Taken::Dropped { id } => ("dropped", Some(id), None),
            Taken::NoIncident => ("no-incident", None, None),
        };
        self.metrics.alert_received(event.source, outcome);
        if opened.is_some() {
            self.metrics.incident_opened(event.source);
        }
        if !matches!(outcome, "unchanged" | "dropped")
            && let Some(id) = id
        {
            // Only an incident opened here is new to the agent and holds a slot from now on;
            // news of one it holds needs none.
            let slot = if opened.is_some() {
                self.slot(slot)
            } else {
                None
            };
            self.spawn(id, slot);
        }
        tracing::info!(
            incident_id = ?id,
            fingerprint = %event.fingerprint,
            alert = %event.alertname,
            status = event.state.as_str(),
            failure = %key,
            outcome,
            "alert received"
        );
        Ok((received(outcome, id), opened))
    }

    /// The slot of an incident just opened: the one taken for it, else one past the
    /// capacity (it is committed: it must be handled). `None` without an agent.
    fn slot(&self, taken: Option<Slot>) -> Option<Slot> {
        taken.or_else(|| self.admission.as_ref().map(|a| a.reserve_over()))
    }

    /// After the commit, never before. A lost message is not a lost incident: the
    /// supervisor's periodic scan finds unfinished incidents and alert news.
    fn spawn(&self, id: Uuid, slot: Option<Slot>) {
        if let Some(supervisor) = &self.supervisor
            && let Err(error) = supervisor.cast(SupervisorMsg::Spawn(id, slot))
        {
            tracing::error!(incident_id = %id, %error, "the supervisor did not take the incident");
        }
    }
}
