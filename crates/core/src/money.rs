//! Money as integer micro-dollars: never `f64` arithmetic on amounts.

use std::fmt;

use crate::error::MoneyError;

/// An amount of US dollars, stored as integer micro-dollars (1 USD = 1,000,000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

const MICROS: i64 = 1_000_000;

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// An amount from micro-dollars.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Parses a dollar amount written as a decimal number in config
    /// (`2.5`, `100`), rounding to the nearest micro-dollar.
    pub fn from_dollars(dollars: f64) -> Result<Self, MoneyError> {
        if !dollars.is_finite() || dollars < 0.0 {
            return Err(MoneyError::Invalid(dollars.to_string()));
        }
        let micros = (dollars * MICROS as f64).round();
        if micros >= i64::MAX as f64 {
            return Err(MoneyError::TooLarge(dollars.to_string()));
        }
        // In range and integral: the cast is exact.
        Ok(Self(micros as i64))
    }

    /// This amount times a whole count, saturating at the maximum.
    pub fn times(self, n: u64) -> Self {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        Self(self.0.saturating_mul(n))
    }

    /// The amount in dollars, for display and for CEL (never for arithmetic
    /// that feeds back into decisions).
    pub fn as_dollars_f64(self) -> f64 {
        self.0 as f64 / MICROS as f64
    }
}

impl serde::Serialize for Usd {
    /// Serialized as an exact decimal string of dollars (`"24.50"`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.to_string();
        s.serialize_str(text.replacen('$', "", 1).as_str())
    }
}

impl Usd {
    /// How many decimals this amount needs to be shown exactly: 2 for whole
    /// cents, up to 6 for micro-dollars.
    pub fn decimals(self) -> usize {
        let frac = self.0.unsigned_abs() % MICROS as u64;
        let mut decimals = 6;
        let mut rest = frac;
        while decimals > 2 && rest % 10 == 0 {
            rest /= 10;
            decimals -= 1;
        }
        decimals
    }

    /// `$12.500` for `decimals` 3: the amount with exactly `decimals`
    /// decimals (2 to 6), so a column of amounts lines up. Never rounds
    /// when `decimals` is at least [`Usd::decimals`]; fewer decimals
    /// truncate toward zero.
    pub fn with_decimals(self, decimals: usize) -> String {
        let mut text = String::with_capacity(16);
        // Writing to a `String` cannot fail.
        let _ = self.write_decimals(&mut text, decimals);
        text
    }

    /// Writes [`Usd::with_decimals`]'s text to `out`, without building it
    /// first.
    fn write_decimals(self, out: &mut impl fmt::Write, decimals: usize) -> fmt::Result {
        let decimals = decimals.clamp(2, 6);
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS as u64;
        // The first `decimals` of the six decimal digits, truncated.
        let dropped = 6u32.saturating_sub(u32::try_from(decimals).unwrap_or(6));
        let frac = (abs % MICROS as u64) / 10u64.pow(dropped);
        write!(out, "{sign}${whole}.{frac:0decimals$}")
    }
}

impl fmt::Display for Usd {
    /// `$12.50`, with more decimals only when the amount needs them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_decimals(f, self.decimals())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written digit by digit, the text is the six decimals cut to
    /// `decimals`, as it was when it was sliced out of `{:06}`.
    #[test]
    fn decimals_are_the_six_digits_truncated() {
        let amounts = [
            0,
            1,
            10,
            999_999,
            1_000_000,
            1_234_567,
            -1,
            -500_000,
            -1_234_567,
            i64::MAX,
            i64::MIN,
        ];
        for micros in amounts {
            let sign = if micros < 0 { "-" } else { "" };
            let abs = micros.unsigned_abs();
            let six = format!("{:06}", abs % 1_000_000);
            for decimals in 0..9 {
                let kept = decimals.clamp(2, 6);
                let expected = format!("{sign}${}.{}", abs / 1_000_000, &six[..kept]);
                assert_eq!(Usd::from_micros(micros).with_decimals(decimals), expected);
            }
            let usd = Usd::from_micros(micros);
            assert_eq!(usd.to_string(), usd.with_decimals(usd.decimals()));
        }
    }

    #[test]
    fn parses_and_displays_dollars() {
        assert_eq!(Usd::from_dollars(2.5).unwrap().micros(), 2_500_000);
        assert_eq!(Usd::from_dollars(0.1).unwrap().micros(), 100_000);
        assert_eq!(Usd::from_dollars(12.5).unwrap().to_string(), "$12.50");
        assert_eq!(Usd::from_micros(1_234_567).to_string(), "$1.234567");
        assert_eq!(
            Usd::from_dollars(3.0).unwrap().times(8).to_string(),
            "$24.00"
        );
    }

    #[test]
    fn a_column_of_amounts_shares_its_decimals() {
        let amounts = [1_234_567, 2_765_433, 4_000_000, -500_000, 10];
        let wanted = amounts
            .iter()
            .map(|&m| Usd::from_micros(m).decimals())
            .max()
            .unwrap();
        assert_eq!(wanted, 6);
        let shown: Vec<String> = amounts
            .iter()
            .map(|&m| Usd::from_micros(m).with_decimals(wanted))
            .collect();
        assert_eq!(
            shown,
            [
                "$1.234567",
                "$2.765433",
                "$4.000000",
                "-$0.500000",
                "$0.000010"
            ]
        );
        assert_eq!(Usd::from_micros(61_001_000).decimals(), 3);
        assert_eq!(Usd::from_micros(61_000_000).with_decimals(3), "$61.000");
        assert_eq!(Usd::from_micros(-1_250_000).to_string(), "-$1.25");
    }

    #[test]
    fn rejects_negative_and_nan() {
        assert!(Usd::from_dollars(-1.0).is_err());
        assert!(Usd::from_dollars(f64::NAN).is_err());
        assert!(Usd::from_dollars(1e300).is_err());
    }
}
