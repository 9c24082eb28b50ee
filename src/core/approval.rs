//! A human's decision on a proposal, pure: what an approval binds to, and whether it may be
//! given now. The API reads the incident, calls [`decide`], and writes the result with the
//! revision it read (a concurrent decision loses the race and is answered from the winner's
//! record); the incident's actor then runs an approved action, re-checked against the world.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::incident::{
    ActionDecision, ActionRecord, ActionStatus, HumanDecision, Incident, Status, TimelineEntry,
    TimelineKind, Verdict,
};

/// Why a decision is refused; each maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No action with that number (404).
    NoAction(String),
    /// The action is not waiting for a human, was decided otherwise, lapsed, or the
    /// incident is not waiting (409).
    Conflict(String),
    /// The proposal expired (410).
    Expired(String),
    /// The proposal is not the one the human saw (412).
    Changed(String),
}

/// What [`decide`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// The decision is recorded on the incident (to be written).
    Now,
    /// The same decision was already recorded: nothing changes (a retry).
    Again,
}

/// Digest of exactly what a proposal asks a human to allow: the incident, the action's
/// number, tool and arguments (without its idempotency key), the pod instance it was
/// proposed for, and its reason. 32 hex digits.
pub fn digest(incident: Uuid, action: &ActionRecord) -> String {
    use sha2::{Digest, Sha256};
    let mut args = action.args.clone();
    if let Some(map) = args.as_object_mut() {
        map.remove("idempotencyKey");
    }
    let canonical = json!([
        incident,
        action.seq,
        action.tool,
        args,
        action.baseline.as_ref().and_then(|b| b.get("pod_uid")),
        action.reason,
    ])
    .to_string();
    Sha256::digest(canonical.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest an `If-Match` header names: `"abc"`, `W/"abc"` or `abc`.
pub fn if_match_digest(header: &str) -> &str {
    let h = header.trim();
    let h = h.strip_prefix("W/").unwrap_or(h);
    h.trim_matches('"')
}

/// Records `verdict` by `by` on action `seq` of `incident`, when it may be given now:
/// the action is a proposal not decided otherwise, not lapsed or expired, the incident
/// waits for a human (escalated), and `proposal` is the digest of the proposal as it is
/// now. An approval makes the action planned on a human's authority and moves the
/// incident to `remediating`; a rejection closes the proposal and leaves the incident
/// escalated. A repeat of the recorded decision is [`Decided::Again`].
pub fn decide(
    incident: &mut Incident,
    seq: u32,
    verdict: Verdict,
    proposal: &str,
    by: &str,
    comment: Option<String>,
    now: DateTime<Utc>,
) -> Result<Decided, Refusal> {
    let id = incident.id;
    let status = incident.status;
    let Some(i) = incident.actions_taken.iter().position(|a| a.seq == seq) else {
        return Err(Refusal::NoAction(format!(
            "incident {id} has no action #{seq}"
        )));
    };
    let action = &incident.actions_taken[i];
    if let Some(h) = &action.human {
        return if h.verdict == verdict {
            Ok(Decided::Again)
        } else {
            Err(Refusal::Conflict(format!(
                "action #{seq} was already {} by {} at {}",
                h.verdict.as_str(),
                h.by,
                h.at.to_rfc3339()
            )))
        };
    }
    if action.status == ActionStatus::Lapsed {
        return Err(Refusal::Conflict(format!(
            "the proposal #{seq} lapsed: {}",
            action.reason
        )));
    }
    let Some(p) = action
        .proposal
        .as_ref()
        .filter(|_| action.status == ActionStatus::Proposed)
    else {
        return Err(Refusal::Conflict(format!(
            "action #{seq} is not a proposal waiting for a human (it is {} {})",
            action.tool,
            action.status.as_str()
        )));
    };
    if status != Status::Escalated {
        return Err(Refusal::Conflict(format!(
            "incident {id} is {status}: proposals are decided while it waits for a human (escalated)"
        )));
    }
    if now >= p.expires_at {
        return Err(Refusal::Expired(format!(
            "the proposal #{seq} expired at {}",
            p.expires_at.to_rfc3339()
        )));
    }
    let current = digest(id, action);
    if proposal != p.digest || proposal != current {
        return Err(Refusal::Changed(format!(
            "the proposal #{seq} is now {current:?}, not {:?}: read the incident again and decide on what it proposes now",
            crate::core::text::clean(proposal, 80)
        )));
    }
    let trace_id = incident.trace_id.clone();
    let tool = action.tool.clone();
    let a = &mut incident.actions_taken[i];
    a.human = Some(HumanDecision {
        verdict,
        by: by.to_owned(),
        at: now,
        comment: comment.clone(),
    });
    let said = comment
        .as_deref()
        .map(|c| format!(": {}", crate::core::text::quote(c, 200)))
        .unwrap_or_default();
    let mut line = |kind, message: String, detail: Value| {
        incident.metadata.timeline.push(TimelineEntry {
            at: now,
            trace_id: trace_id.clone(),
            kind,
            message,
            detail,
        })
    };
    match verdict {
        Verdict::Approved => {
            a.decision = ActionDecision::Approved;
            a.status = ActionStatus::Planned;
            a.reason = format!("approved by {by} (proposed because: {})", a.reason);
            line(
                TimelineKind::Human,
                format!("{tool} #{seq} approved by {by}{said}"),
                json!({ "seq": seq, "verdict": "approved", "by": by }),
            );
            line(
                TimelineKind::Status,
                format!("escalated → remediating: {by} approved {tool} #{seq}"),
                json!({ "from": Status::Escalated, "to": Status::Remediating }),
            );
            incident.status = Status::Remediating;
            incident.wake_at = None;
        }
        Verdict::Rejected => {
            a.status = ActionStatus::Rejected;
            a.finished_at = Some(now);
            line(
                TimelineKind::Human,
                format!("{tool} #{seq} rejected by {by}{said}: nothing runs"),
                json!({ "seq": seq, "verdict": "rejected", "by": by }),
            );
        }
    }
    Ok(Decided::Now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Metadata, Proposal, Severity};
    use chrono::Duration;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn incident() -> Incident {
        let id = Uuid::now_v7();
        let mut a = ActionRecord {
            seq: 1,
            server: "remediation".into(),
            tool: "restart-pod".into(),
            args: json!({ "podName": "db-0", "idempotencyKey": format!("{id}:1") }),
            idempotency_key: format!("{id}:1"),
            decision: ActionDecision::Proposed,
            reason: "payments-db is a database service".into(),
            status: ActionStatus::Proposed,
            result: None,
            started_at: t(0),
            finished_at: None,
            trace_id: "trace".into(),
            baseline: Some(json!({ "pod_uid": "uid-1" })),
            verified: None,
            proposal: None,
            human: None,
        };
        a.proposal = Some(Proposal {
            digest: digest(id, &a),
            expires_at: t(0) + Duration::hours(1),
        });
        Incident {
            id,
            trace_id: "trace".into(),
            status: Status::Escalated,
            title: "db down".into(),
            description: None,
            severity: Severity::Critical,
            created_at: t(0),
            updated_at: t(0),
            rca_analysis: None,
            actions_taken: vec![a],
            metadata: Metadata::default(),
            alerts: Default::default(),
            failure_key: None,
            wake_at: None,
            revision: 3,
            alerts_rev: 0,
            alerts_seen_rev: 0,
            timeline_stored: 0,
            timeline_offset: 0,
        }
    }

    fn digest_of(i: &Incident) -> String {
        i.actions_taken[0].proposal.as_ref().unwrap().digest.clone()
    }

    #[test]
    fn an_approval_plans_exactly_the_proposal_and_resumes_remediation() {
        let mut i = incident();
        let d = digest_of(&i);
        let got = decide(&mut i, 1, Verdict::Approved, &d, "alice", None, t(60));
        assert_eq!(got, Ok(Decided::Now));
        let a = &i.actions_taken[0];
        assert_eq!(a.decision, ActionDecision::Approved);
        assert_eq!(a.status, ActionStatus::Planned);
        assert_eq!(a.human.as_ref().unwrap().by, "alice");
        assert_eq!(i.status, Status::Remediating);
        // The same approval again changes nothing.
        assert_eq!(
            decide(&mut i, 1, Verdict::Approved, &d, "alice", None, t(61)),
            Ok(Decided::Again)
        );
        // The opposite decision conflicts.
        assert!(matches!(
            decide(&mut i, 1, Verdict::Rejected, &d, "bob", None, t(62)),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn a_rejection_runs_nothing_and_keeps_the_incident_waiting() {
        let mut i = incident();
        let d = digest_of(&i);
        decide(
            &mut i,
            1,
            Verdict::Rejected,
            &d,
            "bob",
            Some("not now".into()),
            t(5),
        )
        .unwrap();
        assert_eq!(i.actions_taken[0].status, ActionStatus::Rejected);
        assert_eq!(i.status, Status::Escalated);
        assert!(matches!(
            decide(&mut i, 1, Verdict::Approved, &d, "alice", None, t(6)),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn a_changed_expired_lapsed_or_missing_proposal_is_refused() {
        let mut i = incident();
        assert!(matches!(
            decide(&mut i, 1, Verdict::Approved, "0000", "a", None, t(1)),
            Err(Refusal::Changed(_))
        ));
        let d = digest_of(&i);
        assert!(matches!(
            decide(&mut i, 1, Verdict::Approved, &d, "a", None, t(3_600)),
            Err(Refusal::Expired(_))
        ));
        assert!(matches!(
            decide(&mut i, 2, Verdict::Approved, &d, "a", None, t(1)),
            Err(Refusal::NoAction(_))
        ));
        // The proposal as stored was altered after it was made (another target pod).
        let mut tampered = incident();
        let d = digest_of(&tampered);
        tampered.actions_taken[0].args["podName"] = json!("db-1");
        assert!(matches!(
            decide(&mut tampered, 1, Verdict::Approved, &d, "a", None, t(1)),
            Err(Refusal::Changed(_))
        ));
        let mut lapsed = incident();
        lapsed.actions_taken[0].status = ActionStatus::Lapsed;
        assert!(matches!(
            decide(&mut lapsed, 1, Verdict::Approved, &d, "a", None, t(1)),
            Err(Refusal::Conflict(_))
        ));
        let mut busy = incident();
        let d = digest_of(&busy);
        busy.status = Status::Analyzing;
        assert!(matches!(
            decide(&mut busy, 1, Verdict::Approved, &d, "a", None, t(1)),
            Err(Refusal::Conflict(_))
        ));
        let mut auto = incident();
        auto.actions_taken[0].status = ActionStatus::Succeeded;
        assert!(matches!(
            decide(&mut auto, 1, Verdict::Approved, &d, "a", None, t(1)),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn if_match_accepts_quoted_and_weak_forms() {
        assert_eq!(if_match_digest("\"abc\""), "abc");
        assert_eq!(if_match_digest("W/\"abc\""), "abc");
        assert_eq!(if_match_digest(" abc "), "abc");
    }
}
