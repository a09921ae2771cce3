//! Exact report amounts: the [`Fixed`] decimals GPU-hours and percentages
//! are shown in, and the rounding units of spend and chargeback (see the
//! module documentation of `reports` for how each rounds).

use serde::{Serialize, Serializer};

/// Micro-dollars × [`warden_store::COST_SCALE`] in a cent.
pub(super) const SCALED_PER_CENT: i128 = warden_store::COST_SCALE * 10_000;
/// GPU-microseconds in a hundredth of a GPU-hour.
pub(super) const GPU_MICROS_PER_HUNDREDTH: i128 = warden_store::COST_SCALE / 100;

/// A non-negative decimal with a fixed number of decimals, exact; shown and
/// serialized as text (`"12.50"`), like [`Usd`](warden_core::Usd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fixed {
    units: i128,
    decimals: u32,
}

impl Fixed {
    /// `units` hundredths.
    pub fn hundredths(units: i128) -> Self {
        Self { units, decimals: 2 }
    }

    /// `units` tenths.
    pub fn tenths(units: i128) -> Self {
        Self { units, decimals: 1 }
    }

    /// The value in its smallest unit (hundredths for GPU-hours).
    pub fn units(self) -> i128 {
        self.units
    }
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = 10_u128.pow(self.decimals);
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = self.decimals as usize
        )
    }
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_decimals_are_exact_text() {
        assert_eq!(Fixed::hundredths(1250).to_string(), "12.50");
        assert_eq!(Fixed::hundredths(7).to_string(), "0.07");
        assert_eq!(Fixed::tenths(1000).to_string(), "100.0");
        assert_eq!(
            serde_json::to_string(&Fixed::hundredths(5)).unwrap(),
            "\"0.05\""
        );
    }
}
