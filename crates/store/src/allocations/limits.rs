//! Limit checking, without I/O: the first [`Limit`] a request would
//! exceed given what is counted, what a grant reserves against budgets,
//! and the request checks made before any transaction.

use super::{AllocationRequest, Denial, Limit, Scope};
use crate::error::InputError;
use crate::launches::per_micros;
use crate::spend::{unscale, MICROS_PER_HOUR};
use crate::time::UnixMicros;
use crate::usage::Usage;

/// What the limits of one reservation are checked against.
pub(super) struct Counted<'a> {
    /// Live usage of the request's team.
    pub(super) team: Usage,
    /// Live usage of the request's user within it.
    pub(super) user: Usage,
    /// For a [`Limit::Budget`] from a given instant, what the budget counts
    /// already (scaled as in [`crate::spend`]).
    pub(super) budget_used: &'a dyn Fn(UnixMicros) -> i128,
    /// For a [`Limit::Launches`]: `None` if its bucket holds a launch, else
    /// when it will (`Some(None)`: never).
    pub(super) launch_denied: &'a dyn Fn(&Limit) -> Option<Option<UnixMicros>>,
}

/// The first limit `req` would exceed, given what is `counted`.
pub(super) fn first_exceeded(
    req: &AllocationRequest,
    limits: &[Limit],
    counted: &Counted<'_>,
) -> Option<Denial> {
    let (team, user, budget_used) = (&counted.team, &counted.user, counted.budget_used);
    limits.iter().find_map(|limit| {
        let usage = match limit.scope() {
            Scope::Team => team,
            Scope::User => user,
        };
        let gpus = i64::from(req.gpus);
        let (in_use, requested, max) = match limit {
            Limit::ModelGpus { model, max, .. } => {
                if req.gpu_model.as_ref() != Some(model) {
                    return None;
                }
                (usage.model_gpus, gpus, i64::from(*max))
            }
            Limit::Gpus { max, .. } => (usage.gpus, gpus, i64::from(*max)),
            Limit::LiveAllocations { max, .. } => (usage.live, 1, i64::from(*max)),
            Limit::HourlyCost { max, .. } => {
                (usage.hourly_micros, req.hourly.micros(), max.micros())
            }
            Limit::Budget {
                from,
                max,
                reservation,
            } => {
                // Compared exactly, before any rounding.
                let used = budget_used(*from);
                let total = used.saturating_add(i128::from(reservation.micros()) * MICROS_PER_HOUR);
                let exceeds =
                    reservation.micros() > 0 && total > i128::from(max.micros()) * MICROS_PER_HOUR;
                return exceeds.then(|| Denial {
                    limit: limit.clone(),
                    in_use: unscale(used),
                    requested: reservation.micros(),
                    max: max.micros(),
                    retry_at: None,
                });
            }
            Limit::Launches { max, .. } => {
                return (counted.launch_denied)(limit).map(|retry_at| Denial {
                    limit: limit.clone(),
                    in_use: i64::from(*max),
                    requested: 1,
                    max: i64::from(*max),
                    retry_at,
                });
            }
        };
        let exceeds = requested > 0 && in_use.checked_add(requested).is_none_or(|t| t > max);
        exceeds.then(|| Denial {
            limit: limit.clone(),
            in_use,
            requested,
            max,
            retry_at: None,
        })
    })
}

/// What a grant under `limits` reserves against its team's budgets: the
/// largest positive `reservation` of its [`Limit::Budget`]s, else 0.
pub(super) fn reserved_micros(limits: &[Limit]) -> i64 {
    limits
        .iter()
        .filter_map(|limit| match limit {
            Limit::Budget { reservation, .. } => Some(reservation.micros()),
            _ => None,
        })
        .fold(0, i64::max)
}

/// Checks what the store cannot represent, before any transaction.
pub(crate) fn check_request(req: &AllocationRequest, limits: &[Limit]) -> Result<(), InputError> {
    if req.hourly.micros() < 0 {
        return Err(InputError::NegativeHourly(req.hourly));
    }
    for limit in limits {
        if let Limit::Launches { per, .. } = limit {
            if per_micros(*per).is_none() {
                return Err(InputError::LaunchWindow(*per));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use warden_core::{Door, GpuModel, TeamName, Usd};

    use super::*;
    use crate::allocations::AllocationName;

    fn request(gpus: u32, hourly: i64) -> AllocationRequest {
        AllocationRequest {
            door: Door::Skypilot,
            team: TeamName::parse("ml").unwrap(),
            user: Some("alice".to_owned()),
            name: AllocationName::parse("c1").unwrap(),
            gpu_model: Some(GpuModel::parse("H100").unwrap()),
            gpus,
            hourly: Usd::from_micros(hourly),
            context: None,
        }
    }

    /// `first_exceeded` with no budget spent and every launch bucket full.
    fn check(
        req: &AllocationRequest,
        limits: &[Limit],
        team: Usage,
        user: Usage,
    ) -> Option<Denial> {
        let counted = Counted {
            team,
            user,
            budget_used: &|_| 0,
            launch_denied: &|_| None,
        };
        first_exceeded(req, limits, &counted)
    }

    #[test]
    fn first_exceeded_limit_in_order_wins() {
        let req = request(2, 5_000_000);
        let team = Usage {
            gpus: 7,
            model_gpus: 7,
            live: 3,
            hourly_micros: 20_000_000,
        };
        let user = Usage::default();
        let limits = [
            Limit::LiveAllocations {
                scope: Scope::User,
                max: 1,
            },
            Limit::HourlyCost {
                scope: Scope::Team,
                max: Usd::from_micros(24_000_000),
            },
            Limit::Gpus {
                scope: Scope::Team,
                max: 8,
            },
        ];
        let denial = check(&req, &limits, team, user).unwrap();
        assert_eq!(denial.in_use, 20_000_000);
        assert_eq!(denial.requested, 5_000_000);
        assert_eq!(denial.max, 24_000_000);
        assert_eq!(
            denial.to_string(),
            "quota exceeded: at most $24.00/h of live allocations per team; \
             $20.00/h in use, $5.00/h requested"
        );
    }

    #[test]
    fn a_request_that_adds_nothing_is_not_denied() {
        let over = Usage {
            gpus: 99,
            model_gpus: 99,
            live: 0,
            hourly_micros: 0,
        };
        let limits = [
            Limit::Gpus {
                scope: Scope::Team,
                max: 8,
            },
            Limit::ModelGpus {
                model: GpuModel::parse("A100").unwrap(),
                scope: Scope::Team,
                max: 0,
            },
        ];
        assert_eq!(check(&request(0, 0), &limits, over, over), None);
        // Another model's limit does not apply to an H100 launch.
        let fresh = Usage::default();
        assert_eq!(check(&request(1, 0), &limits[1..], fresh, fresh), None);
    }
}
