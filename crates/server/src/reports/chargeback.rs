//! The monthly chargeback ([`chargeback`]): one invoice line per team and
//! GPU model, in cents apportioned so the lines add up to the total.

use std::collections::BTreeMap;

use serde::Serialize;
use warden_core::{GpuModel, TeamName, Usd};
use warden_store::{GroupBy, GroupKey, GroupUsage, Store, StoreError, UnixMicros, UsageQuery};

use super::amounts::{Fixed, GPU_MICROS_PER_HUNDREDTH, SCALED_PER_CENT};
use super::period::{instant, Period};

/// One invoice line: a team's use of one GPU model over the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackLine {
    /// The team charged.
    pub team: TeamName,
    /// The GPU model; `null` for allocations of no known model.
    pub gpu_model: Option<GpuModel>,
    /// Allocations that ran for some of the month.
    pub allocations: u64,
    /// GPUs × hours, in hundredths, split so lines add up to the total.
    pub gpu_hours: Fixed,
    /// Cost in whole cents, split so lines add up to the total (see the
    /// module documentation).
    pub amount_usd: Usd,
}

/// A team's lines together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackTeam {
    /// The team.
    pub team: TeamName,
    /// Its allocations.
    pub allocations: u64,
    /// The sum of its lines' GPU-hours.
    pub gpu_hours: Fixed,
    /// The sum of its lines' amounts.
    pub amount_usd: Usd,
}

/// The whole month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargebackTotal {
    /// All allocations.
    pub allocations: u64,
    /// Exact GPU-hours rounded half up to 0.01; the sum of the lines.
    pub gpu_hours: Fixed,
    /// Exact cost rounded half up to the cent; the sum of the lines.
    pub amount_usd: Usd,
}

/// A month's charges per team and GPU model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chargeback {
    /// `2026-11`.
    pub month: String,
    /// The month as instants.
    pub period: Period,
    /// The instant live allocations are accrued to.
    #[serde(serialize_with = "instant")]
    pub as_of: UnixMicros,
    /// Whether the month is over at `as_of`; if not, the amounts are
    /// month-to-date.
    pub complete: bool,
    /// Always `USD`.
    pub currency: &'static str,
    /// By team, then GPU model (no model first).
    pub lines: Vec<ChargebackLine>,
    /// Per team, by team.
    pub teams: Vec<ChargebackTeam>,
    /// The lines together.
    pub total: ChargebackTotal,
}

/// The chargeback of `month` (from [`parse_month`](super::parse_month)) at `now`.
pub async fn chargeback(
    store: &Store,
    month: &Period,
    now: UnixMicros,
) -> Result<Chargeback, StoreError> {
    let period = month.clone();
    let groups = store
        .usage(&UsageQuery {
            from: period.from,
            to: period.until,
            now,
            by: GroupBy::TeamGpuModel,
            team: None,
        })
        .await?;
    Ok(build_chargeback(period, now, &groups))
}

fn build_chargeback(period: Period, now: UnixMicros, groups: &[GroupUsage]) -> Chargeback {
    // `groups` come sorted by (team, model): the line order.
    let cost: Vec<i128> = groups.iter().map(|g| g.cost_scaled).collect();
    let gpu: Vec<i128> = groups.iter().map(|g| g.gpu_micros).collect();
    let (cents, total_cents) = apportion(&cost, SCALED_PER_CENT);
    let (hundredths, total_hundredths) = apportion(&gpu, GPU_MICROS_PER_HUNDREDTH);
    let usd = |cents: i128| {
        Usd::from_micros(i64::try_from(cents.saturating_mul(10_000)).unwrap_or(i64::MAX))
    };
    let mut lines = Vec::with_capacity(groups.len());
    for ((g, c), h) in groups.iter().zip(cents).zip(hundredths) {
        let (team, gpu_model) = match &g.key {
            GroupKey::TeamGpuModel { team, gpu_model } => (team.clone(), gpu_model.clone()),
            // Unreachable: the store answers with the grouping asked for.
            _ => continue,
        };
        lines.push((
            ChargebackLine {
                team,
                gpu_model,
                allocations: g.allocations,
                gpu_hours: Fixed::hundredths(h),
                amount_usd: usd(c),
            },
            c,
        ));
    }
    let mut teams: BTreeMap<TeamName, (u64, i128, i128)> = BTreeMap::new();
    for (line, c) in &lines {
        let t = teams.entry(line.team.clone()).or_default();
        t.0 += line.allocations;
        t.1 += line.gpu_hours.units();
        t.2 += c;
    }
    let teams = teams
        .into_iter()
        .map(|(team, (allocations, h, c))| ChargebackTeam {
            team,
            allocations,
            gpu_hours: Fixed::hundredths(h),
            amount_usd: usd(c),
        })
        .collect();
    let lines: Vec<ChargebackLine> = lines.into_iter().map(|(l, _)| l).collect();
    Chargeback {
        month: period.label.clone(),
        complete: period.until <= now,
        period,
        as_of: now,
        currency: "USD",
        total: ChargebackTotal {
            allocations: lines.iter().map(|l| l.allocations).sum(),
            gpu_hours: Fixed::hundredths(total_hundredths),
            amount_usd: usd(total_cents),
        },
        lines,
        teams,
    }
}

/// Splits exact non-negative amounts into whole `unit`s (largest
/// remainder): the total is the exact sum rounded half up; each part is its
/// amount rounded down, plus one unit for the parts with the largest
/// remainders (ties: the earlier part) until the parts add up to the total.
/// Each part is then within one unit of its amount, and only parts with a
/// remainder are rounded up. Returns (parts, total).
fn apportion(amounts: &[i128], unit: i128) -> (Vec<i128>, i128) {
    let sum: i128 = amounts.iter().sum();
    let total = (sum + unit / 2).div_euclid(unit);
    let mut parts: Vec<i128> = amounts.iter().map(|a| a.div_euclid(unit)).collect();
    let mut left = total - parts.iter().sum::<i128>();
    let mut order: Vec<(usize, i128)> = amounts
        .iter()
        .map(|a| a.rem_euclid(unit))
        .enumerate()
        .collect();
    order.sort_by(|(i, a), (j, b)| b.cmp(a).then(i.cmp(j)));
    for (i, remainder) in order {
        if left <= 0 || remainder == 0 {
            break;
        }
        if let Some(part) = parts.get_mut(i) {
            *part += 1;
            left -= 1;
        }
    }
    (parts, total)
}

#[cfg(test)]
mod tests {
    use warden_store::TimeZone;

    use super::*;
    use crate::reports::parse_month;
    use crate::reports::period::tests::at;

    #[test]
    fn apportioned_parts_add_up_and_stay_within_a_unit() {
        // Three thirds of a unit each: the total rounds to 1, which goes to
        // the first of the equal remainders.
        assert_eq!(apportion(&[1, 1, 1], 3), (vec![1, 0, 0], 1));
        // 0.4 + 0.4 + 0.4 = 1.2 → 1; 0.6 + 0.6 = 1.2 → 1 (not 2).
        assert_eq!(apportion(&[4, 4, 4], 10), (vec![1, 0, 0], 1));
        assert_eq!(apportion(&[6, 6], 10), (vec![1, 0], 1));
        // Half up: 0.25 + 0.25 = 0.5 → 1, to the first.
        assert_eq!(apportion(&[25, 25], 100), (vec![1, 0], 1));
        // Exact parts are not touched; the largest remainder wins.
        assert_eq!(apportion(&[100, 149, 170], 100), (vec![1, 1, 2], 4));
        assert_eq!(apportion(&[], 100), (vec![], 0));
        // Many small parts.
        let amounts: Vec<i128> = (0..1000).map(|i| (i * 7_919) % 10_007).collect();
        let (parts, total) = apportion(&amounts, 1000);
        assert_eq!(parts.iter().sum::<i128>(), total);
        assert_eq!(total, (amounts.iter().sum::<i128>() + 500) / 1000);
        for (a, p) in amounts.iter().zip(&parts) {
            assert!((p * 1000 - a).abs() < 1000, "{a} -> {p}");
        }
    }

    fn line(
        team: &str,
        model: Option<&str>,
        allocations: u64,
        cost_scaled: i128,
        gpu: i128,
    ) -> GroupUsage {
        GroupUsage {
            key: GroupKey::TeamGpuModel {
                team: TeamName::parse(team).unwrap(),
                gpu_model: model.map(|m| GpuModel::parse(m).unwrap()),
            },
            allocations,
            cost_scaled,
            gpu_micros: gpu,
        }
    }

    #[test]
    fn chargeback_lines_add_up_to_the_total_in_cents() {
        let month = parse_month("month", "2026-11", &TimeZone::UTC).unwrap();
        // $0.005 three times: each line's exact cost is half a cent; the
        // total, $0.015, rounds half up to 2 cents, given to the first two.
        let half_cent = SCALED_PER_CENT / 2;
        let third_hour = warden_store::COST_SCALE / 3;
        let groups = [
            line("cv", None, 1, half_cent, 0),
            line("ml", Some("A100"), 2, half_cent, third_hour),
            line(
                "ml",
                Some("H100"),
                1,
                half_cent + 3 * SCALED_PER_CENT * 100,
                8 * third_hour,
            ),
        ];
        let c = build_chargeback(month.clone(), at("2026-12-02"), &groups);
        let cents: Vec<i64> = c
            .lines
            .iter()
            .map(|l| l.amount_usd.micros() / 10_000)
            .collect();
        assert_eq!(cents, [1, 1, 300]);
        assert_eq!(c.total.amount_usd, Usd::from_micros(3_020_000));
        assert_eq!(
            c.lines.iter().map(|l| l.amount_usd.micros()).sum::<i64>(),
            c.total.amount_usd.micros()
        );
        // 1/3 h + 8/3 h = 3 h: 0.33 + 2.67 (the larger remainder is 0.66).
        let hours: Vec<String> = c.lines.iter().map(|l| l.gpu_hours.to_string()).collect();
        assert_eq!(hours, ["0.00", "0.33", "2.67"]);
        assert_eq!(c.total.gpu_hours.to_string(), "3.00");
        assert_eq!(c.total.allocations, 4);
        assert_eq!(c.teams.len(), 2);
        assert_eq!(c.teams[1].amount_usd, Usd::from_micros(3_010_000));
        assert_eq!(c.teams[1].gpu_hours.to_string(), "3.00");
        assert!(c.complete);
        assert_eq!(c.month, "2026-11");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["lines"][0]["gpu_model"], serde_json::Value::Null);
        assert_eq!(json["lines"][2]["amount_usd"], "3.00");
        assert_eq!(json["total"]["amount_usd"], "3.02");
        assert_eq!(json["period"]["from"], "2026-11-01T00:00:00.000000Z");
        assert!(!build_chargeback(month, at("2026-11-30"), &groups).complete);
    }
}
