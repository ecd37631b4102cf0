//! Wall-clock helpers shared by every role: the node stores and sends times as milliseconds
//! since the Unix epoch, and shows them to people as RFC 3339.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Renders milliseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(millis: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(at).to_string()
}
