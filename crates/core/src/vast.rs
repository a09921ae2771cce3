//! What a policy says about a team at the Vast door beyond the launch
//! decision: the offer constraints searches get (`teams.<t>.vast`), and the
//! team limits a door can apply before there is a request to decide (a
//! search shows only what a create could be allowed).

use serde::Deserialize;

use crate::ids::{GpuModel, TeamName};
use crate::money::Usd;
use crate::policy::{Action, Mode, Policy};
use crate::request::Door;

/// `teams.<name>.vast` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VastTeamSpec {
    /// Lowest host reliability (`reliability2`, 0 to 1) the team may rent.
    #[serde(default)]
    pub min_reliability: Option<f64>,
    /// Rent only from verified hosts.
    #[serde(default)]
    pub verified_only: bool,
    /// What happens when the team's hard budget is used up (default `block`).
    #[serde(default)]
    pub on_budget_exhausted: Option<BudgetAction>,
}

/// What the Vast door does when a team's hard budget is used up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetAction {
    /// New creates (and restarts) are denied; running instances go on.
    #[default]
    Block,
    /// Also stop the team's running instances.
    Stop,
}

/// A team's compiled Vast options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VastTeam {
    /// Lowest host reliability, 0 to 1.
    pub min_reliability: Option<f64>,
    /// Verified hosts only.
    pub verified_only: bool,
    /// What an exhausted hard budget does.
    pub on_budget_exhausted: BudgetAction,
}

/// Validates `teams.<name>.vast`; problems are `(key path, message)`.
pub(crate) fn compile(
    path: &str,
    spec: Option<&VastTeamSpec>,
) -> (VastTeam, Vec<(String, String)>) {
    let Some(spec) = spec else {
        return (VastTeam::default(), Vec::new());
    };
    let mut problems = Vec::new();
    if let Some(r) = spec.min_reliability {
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            problems.push((
                format!("{path}.vast.min_reliability"),
                format!("`{r}` is not a reliability from 0 to 1 (e.g. 0.98)"),
            ));
        }
    }
    (
        VastTeam {
            min_reliability: spec.min_reliability,
            verified_only: spec.verified_only,
            on_budget_exhausted: spec.on_budget_exhausted.unwrap_or_default(),
        },
        problems,
    )
}

/// The limits on one launch of a team that hold whatever is launched:
/// from the team limits (`teams.<t>.allowed_gpus`, `max_gpus_per_launch`,
/// `max_hourly_usd`) and from rules with no condition but teams and doors,
/// all in `enforce` mode. A door uses them to show only what could be
/// allowed (search filters); the decision itself still judges every rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchLimits {
    /// GPU models allowed (every list intersected); `None` = any.
    pub allowed_gpus: Option<Vec<GpuModel>>,
    /// Most GPUs per launch.
    pub max_gpus: Option<u64>,
    /// Most $/hour per launch.
    pub max_hourly: Option<Usd>,
}

impl Policy {
    /// The unconditional launch limits of `team` at `door`; see [`LaunchLimits`].
    pub fn launch_limits(&self, team: &TeamName, door: Door) -> LaunchLimits {
        let mut out = LaunchLimits::default();
        for rule in &self.rules {
            let m = &rule.matcher;
            let applies = rule.mode == Mode::Enforce
                && m.teams.as_ref().is_none_or(|t| t.contains(team))
                && m.doors.as_ref().is_none_or(|d| d.contains(&door))
                && m.users.is_none()
                && m.requests.is_none()
                && m.when.is_none()
                && m.resource.is_none();
            if !applies {
                continue;
            }
            match &rule.action {
                Action::AllowedGpus { models, .. } => {
                    out.allowed_gpus = Some(match out.allowed_gpus.take() {
                        None => models.clone(),
                        Some(prev) => prev.into_iter().filter(|m| models.contains(m)).collect(),
                    });
                }
                Action::MaxGpus(n) => out.max_gpus = Some(out.max_gpus.map_or(*n, |p| p.min(*n))),
                Action::MaxHourly(usd) => {
                    out.max_hourly = Some(out.max_hourly.map_or(*usd, |p| p.min(*usd)));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_limits_combine_team_limits_and_unconditional_rules() {
        let p = Policy::from_yaml(
            r#"
teams:
  ml: {allowed_gpus: [RTX_4090, H100_SXM], max_hourly_usd: 3, max_gpus_per_launch: 4}
  cv: {}
rules:
  - {name: no-h100, match: {doors: [vast]}, allowed_gpus: [RTX_4090, RTX_3090]}
  - {name: cheap, match: {teams: [ml]}, max_hourly_usd: 2}
  - {name: conditional, match: {when: 'request.gpus > 1'}, max_gpus: 1}
  - {name: warned, mode: warn, max_gpus: 1}
"#,
        )
        .unwrap();
        let ml = TeamName::parse("ml").unwrap();
        let l = p.launch_limits(&ml, Door::Vast);
        assert_eq!(
            l.allowed_gpus,
            Some(vec![GpuModel::parse("RTX_4090").unwrap()])
        );
        assert_eq!(l.max_hourly, Some(Usd::from_micros(2_000_000)));
        assert_eq!(l.max_gpus, Some(4));
        // The door-matched rule does not apply at another door.
        let sky = p.launch_limits(&ml, Door::Skypilot);
        assert_eq!(sky.allowed_gpus.unwrap().len(), 2);
        let cv = p.launch_limits(&TeamName::parse("cv").unwrap(), Door::Vast);
        assert_eq!(cv.max_hourly, None);
        assert_eq!(cv.allowed_gpus.unwrap().len(), 2);
    }

    #[test]
    fn a_quoted_price_is_what_price_limits_judge() {
        use crate::request::{Accelerator, LaunchRequest, Quote};
        let p = Policy::from_yaml("teams:\n  ml: {max_hourly_usd: 1}\n").unwrap();
        let mut req = LaunchRequest::new(Door::Vast, "launch");
        req.principal.team = Some("ml".into());
        req.resources[0].accelerator = Some(Accelerator {
            model: GpuModel::parse("H100").unwrap(),
            count: 1,
        });
        // The price table says $3.00/h for an H100; this machine is cheaper.
        let quote = |on_demand, spot| Quote {
            on_demand: Usd::from_micros(on_demand),
            spot: Usd::from_micros(spot),
        };
        req.resources[0].quote = Some(quote(800_000, 400_000));
        let d = p.decide(&req);
        assert!(d.is_allowed(), "{}", d.denial_message());
        assert_eq!(d.hourly_usd, Some(Usd::from_micros(800_000)));
        req.resources[0].quote = Some(quote(1_200_000, 600_000));
        let d = p.decide(&req);
        assert!(
            d.denial_message().contains("$1.20/hour"),
            "{}",
            d.denial_message()
        );
        req.resources[0].use_spot = true;
        let d = p.decide(&req);
        assert_eq!(d.hourly_usd, Some(Usd::from_micros(600_000)));
    }

    #[test]
    fn vast_options_are_validated() {
        let err = Policy::from_yaml("teams:\n  ml:\n    vast: {min_reliability: 1.5}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("teams.ml.vast.min_reliability"), "{err}");
        let err = Policy::from_yaml("teams:\n  ml:\n    vast: {on_budget: stop}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `on_budget`"), "{err}");
        let p = Policy::from_yaml(
            "teams:\n  ml:\n    vast: {min_reliability: 0.98, verified_only: true, on_budget_exhausted: stop}\n",
        )
        .unwrap();
        let t = p.team(&TeamName::parse("ml").unwrap()).unwrap();
        assert_eq!(t.vast.on_budget_exhausted, BudgetAction::Stop);
        assert_eq!(t.vast.min_reliability, Some(0.98));
        assert!(t.vast.verified_only);
    }
}
