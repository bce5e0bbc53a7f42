//! The bearer token of the HTTP endpoint: every action needs it (and is off
//! without one); read-only endpoints only with `http.protect_read_endpoints`.

use axum::http::{HeaderMap, StatusCode};

use crate::config::Config;

/// A status code and a plain-text body.
pub(super) type Reply = (StatusCode, String);

pub(super) fn authorize_read(config: &Config, headers: &HeaderMap) -> Result<(), Reply> {
    if config.http.protect_read_endpoints {
        authorize(config, headers, false)
    } else {
        Ok(())
    }
}

pub(super) fn authorize(
    config: &Config,
    headers: &HeaderMap,
    changes_state: bool,
) -> Result<(), Reply> {
    let Some(token) = &config.http.token else {
        let reason = if changes_state {
            "state-changing endpoints are off: set http.token"
        } else {
            "set http.token"
        };
        return Err((StatusCode::FORBIDDEN, format!("{reason}\n")));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), token.expose().as_bytes()) => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token\n".to_string(),
        )),
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
