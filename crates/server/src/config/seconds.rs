//! The one range check of a config's intervals, timeouts and grace
//! periods in seconds (`skypilot_api.*`, `vast.*`, `kubernetes.*`).

use std::time::Duration;

/// The longest interval, timeout or grace period these keys take: a day.
pub(crate) const MAX_SECONDS: u64 = 86_400;

/// `given` seconds of config key `key` (`default` when not written); a
/// value outside `min..=`[`MAX_SECONDS`] adds a problem naming the key.
pub(crate) fn seconds(
    problems: &mut Vec<String>,
    key: &str,
    given: Option<u64>,
    default: u64,
    min: u64,
) -> Duration {
    let v = given.unwrap_or(default);
    if v < min || v > MAX_SECONDS {
        problems.push(format!(
            "{key}: `{v}` is out of range; use {min} to {MAX_SECONDS} seconds"
        ));
    }
    Duration::from_secs(v)
}
