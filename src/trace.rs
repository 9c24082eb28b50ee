//! Trace ids: W3C trace-context ids (32 lowercase hex digits), taken from a `traceparent`
//! header when a caller sends a valid one, minted fresh otherwise.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A W3C trace id: 16 random bytes as 32 lowercase hex digits, never all zeros.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceId(String);

impl TraceId {
    /// A fresh random trace id.
    pub fn generate() -> Self {
        // A v4 UUID carries 122 random bits, plenty for a trace id, and saves a `rand` dependency.
        TraceId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The trace id of a W3C `traceparent` header (`00-<trace-id>-<parent-id>-<flags>`),
    /// or `None` when the header is not valid, in which case the receiver starts a new trace
    /// (W3C trace-context, section 4.3).
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2) || version == "ff" || !hex(parent_id, 16) || !hex(flags, 2) {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Self::parse(trace_id).ok()
    }

    /// A trace id as given in a query or a stored row: 32 lowercase hex digits, not all zeros.
    pub fn parse(s: &str) -> Result<Self, InvalidTraceId> {
        let well_formed = s.len() == 32
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && !s.bytes().all(|b| b == b'0');
        if well_formed {
            Ok(TraceId(s.to_owned()))
        } else {
            Err(InvalidTraceId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a trace id is 32 lowercase hex digits, not all zeros")]
pub struct InvalidTraceId;

impl TryFrom<String> for TraceId {
    type Error = InvalidTraceId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TraceId::parse(&s)
    }
}

impl From<TraceId> for String {
    fn from(t: TraceId) -> String {
        t.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let t = TraceId::from_traceparent(VALID).unwrap();
        assert_eq!(t.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceId::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_future_version_may_carry_more_fields() {
        let header = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceId::from_traceparent(header).is_some());
    }

    #[test]
    fn generated_trace_ids_are_valid_and_distinct() {
        let (a, b) = (TraceId::generate(), TraceId::generate());
        assert_ne!(a, b);
        assert_eq!(TraceId::parse(a.as_str()), Ok(a));
    }
}
