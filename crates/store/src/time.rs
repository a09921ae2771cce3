//! Instants as the store keeps them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant: whole microseconds since the Unix epoch (negative before
/// it). Stored as a BIGINT on both backends, so it compares and sums exactly
/// and means the same thing everywhere.
///
/// The store never reads a clock: every write takes the caller's "now"
/// (DESIGN.md, "Time is an input").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct UnixMicros(i64);

impl UnixMicros {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: UnixMicros = UnixMicros(0);

    /// An instant from microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The instant a [`SystemTime`] stands for, saturating far outside
    /// ±292,000 years.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => Self(
                i64::try_from(before.duration().as_micros())
                    .map(|m| -m)
                    .unwrap_or(i64::MIN),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn converts_system_time_both_sides_of_the_epoch() {
        let later = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            UnixMicros::from_system_time(later).micros(),
            1_700_000_000_123_456
        );
        let earlier = UNIX_EPOCH - Duration::from_micros(5);
        assert_eq!(UnixMicros::from_system_time(earlier).micros(), -5);
        assert_eq!(UnixMicros::from_system_time(UNIX_EPOCH), UnixMicros::EPOCH);
    }
}
