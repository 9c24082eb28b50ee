//! The three MCP servers. Each is a thin rmcp tool router over its knowledge: the catalog
//! (mapping), an [`Observability`](crate::backend::Observability) backend, a
//! [`Remediation`](crate::backend::Remediation) backend. Argument checks that need no
//! backend happen here, so a bad call never reaches the world.

pub mod common;
pub mod mapping;
pub mod observability;
pub mod remediation;

/// Longest service name accepted (a Kubernetes label value).
pub const SERVICE_NAME_CHARS_MAX: usize = 63;
/// Longest pod name accepted (a Kubernetes object name).
pub const POD_NAME_CHARS_MAX: usize = 253;
/// Longest alert type accepted.
pub const ALERT_TYPE_CHARS_MAX: usize = 128;

/// Checks a Kubernetes-style name (`a-z`, `0-9`, `-`, `.`), naming the argument on error.
pub fn check_name(argument: &str, value: &str, max: usize) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{argument} must be 1 to {max} characters of lowercase letters, digits, '-' and '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        assert!(check_name("podName", "checkout-api-7d9f-x2k", 253).is_ok());
        for bad in ["", "Checkout", "a b", "x;rm -rf", "ü", &"a".repeat(254)] {
            assert!(check_name("podName", bad, 253).is_err(), "{bad:?}");
        }
    }
}
