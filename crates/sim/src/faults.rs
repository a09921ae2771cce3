//! Fault injection, for testing what sits in front of the simulator.
//!
//! A [`Fault`] names an endpoint (or all), an action and a trigger. On each
//! request the first fault whose endpoint matches and whose trigger fires is
//! applied; a `Next(n)` fault is used up after `n` requests. Actions:
//!
//! - `Delay(d)`: wait `d`, then answer normally.
//! - `Fail(status)`: answer `status` at once; nothing is performed.
//! - `FailAfter(status)`: perform the action (e.g. create the instance), then
//!   answer `status` instead of the result.
//! - `Drop`: perform the action, then close the connection without an answer.
//!   This needs [`crate::serve`]; a router mounted elsewhere hangs instead.
//! - `Hang`: perform the action, then never answer (until the simulator
//!   shuts down, when the request gets a 503).
//!
//! Text form (for config files and CLI flags), `ENDPOINT:ACTION[:TRIGGER]`:
//! ENDPOINT is `*` or an [`Endpoint`] name (`create`, `search`, ...);
//! ACTION is `503`, `500-after`, `drop`, `hang` or `delay=250ms`;
//! TRIGGER is a count `3` (the next three requests, the default being 1) or
//! a probability `p0.25` (drawn from the seeded generator). Examples:
//! `create:drop` (the next create is performed, then the connection closes),
//! `*:503:p0.1`, `destroy:500-after:2`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::catalog::SplitMix64;
use crate::error::ApiError;
use crate::serve::ConnectionKill;
use crate::SimState;

/// An endpoint of the simulated API, for targeting faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /api/v0/users/current` (`user`).
    ShowUser,
    /// `GET /api/v0/gpu_names/unique/` (`gpu-names`).
    GpuNames,
    /// `POST /api/v0/bundles/`, `PUT /api/v0/search/asks/` (`search`).
    SearchOffers,
    /// `PUT /api/v0/asks/{id}/`, `POST /api/v0/asks/bulk/` (`create`).
    CreateInstance,
    /// `PUT /api/v0/launch_instance/` (`launch`).
    LaunchInstance,
    /// `GET /api/v1/instances/`, `GET /api/v0/instances/` (`list`).
    ShowInstances,
    /// `GET /api/v0/instances/filters/` (`filters`).
    InstanceFilters,
    /// `GET /api/v0/instances/{id}/` (`show`).
    ShowInstance,
    /// `PUT /api/v0/instances/{id}/` and `PUT /api/v0/instances/`: start, stop, label (`manage`).
    ManageInstance,
    /// `DELETE /api/v0/instances/{id}/` and `DELETE /api/v0/instances/` (`destroy`).
    DestroyInstance,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 10] = [
        Endpoint::ShowUser,
        Endpoint::GpuNames,
        Endpoint::SearchOffers,
        Endpoint::CreateInstance,
        Endpoint::LaunchInstance,
        Endpoint::ShowInstances,
        Endpoint::InstanceFilters,
        Endpoint::ShowInstance,
        Endpoint::ManageInstance,
        Endpoint::DestroyInstance,
    ];

    /// The endpoint's name in the text form of a fault.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ShowUser => "user",
            Endpoint::GpuNames => "gpu-names",
            Endpoint::SearchOffers => "search",
            Endpoint::CreateInstance => "create",
            Endpoint::LaunchInstance => "launch",
            Endpoint::ShowInstances => "list",
            Endpoint::InstanceFilters => "filters",
            Endpoint::ShowInstance => "show",
            Endpoint::ManageInstance => "manage",
            Endpoint::DestroyInstance => "destroy",
        }
    }
}

/// What a fault does to a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultAction {
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer this HTTP status at once; the action is not performed.
    Fail(u16),
    /// Perform the action, then answer this HTTP status instead.
    FailAfter(u16),
    /// Perform the action, then close the connection without answering.
    Drop,
    /// Perform the action, then never answer.
    Hang,
}

/// When a fault applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// To the next `n` matching requests, then it is used up.
    Next(u32),
    /// To each matching request with this probability (seeded, reproducible).
    Probability(f64),
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// The endpoint it targets; `None` targets all.
    pub endpoint: Option<Endpoint>,
    /// What it does.
    pub action: FaultAction,
    /// When it applies.
    pub trigger: Trigger,
}

impl Fault {
    /// A fault on the next request to `endpoint`.
    pub fn next(endpoint: Endpoint, action: FaultAction) -> Fault {
        Fault {
            endpoint: Some(endpoint),
            action,
            trigger: Trigger::Next(1),
        }
    }
}

/// A fault's text form could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault `{text}`: {problem} (form: ENDPOINT:ACTION[:TRIGGER], e.g. `create:drop`, `*:503:p0.1`, `search:delay=250ms:3`)")]
pub struct FaultParseError {
    text: String,
    problem: String,
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Fault, FaultParseError> {
        let err = |problem: String| FaultParseError {
            text: text.to_owned(),
            problem,
        };
        let mut parts = text.split(':');
        let endpoint = match parts.next().unwrap_or_default() {
            "*" => None,
            name => Some(
                Endpoint::ALL
                    .into_iter()
                    .find(|e| e.name() == name)
                    .ok_or_else(|| {
                        let names: Vec<_> = Endpoint::ALL.iter().map(|e| e.name()).collect();
                        err(format!(
                            "unknown endpoint `{name}`; use * or one of {}",
                            names.join(", ")
                        ))
                    })?,
            ),
        };
        let action = parts.next().ok_or_else(|| err("no action".to_owned()))?;
        let status = |s: &str| match s.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => Ok(code),
            _ => Err(err(format!("`{s}` is not an HTTP error status (400-599)"))),
        };
        let action = match action {
            "drop" => FaultAction::Drop,
            "hang" => FaultAction::Hang,
            a if a.starts_with("delay=") => {
                let ms = a.trim_start_matches("delay=").trim_end_matches("ms");
                FaultAction::Delay(Duration::from_millis(
                    ms.parse()
                        .map_err(|_| err(format!("`{a}` is not delay=<milliseconds>ms")))?,
                ))
            }
            a => match a.strip_suffix("-after") {
                Some(code) => FaultAction::FailAfter(status(code)?),
                None => FaultAction::Fail(status(a)?),
            },
        };
        let trigger = match parts.next() {
            None => Trigger::Next(1),
            Some(p) if p.starts_with('p') => match p.trim_start_matches('p').parse::<f64>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Trigger::Probability(x),
                _ => return Err(err(format!("`{p}` is not a probability p0..p1"))),
            },
            Some(n) => Trigger::Next(
                n.parse()
                    .map_err(|_| err(format!("`{n}` is neither a count nor a probability pX")))?,
            ),
        };
        if let Some(extra) = parts.next() {
            return Err(err(format!("unexpected `{extra}` after the trigger")));
        }
        Ok(Fault {
            endpoint,
            action,
            trigger,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.endpoint.map_or("*", Endpoint::name))?;
        match self.action {
            FaultAction::Delay(d) => write!(f, ":delay={}ms", d.as_millis())?,
            FaultAction::Fail(code) => write!(f, ":{code}")?,
            FaultAction::FailAfter(code) => write!(f, ":{code}-after")?,
            FaultAction::Drop => f.write_str(":drop")?,
            FaultAction::Hang => f.write_str(":hang")?,
        }
        match self.trigger {
            Trigger::Next(n) => write!(f, ":{n}"),
            Trigger::Probability(p) => write!(f, ":p{p}"),
        }
    }
}

/// The pending faults, the latency added to every request, and the
/// generator probabilistic faults draw from.
#[derive(Debug)]
pub(crate) struct FaultBook {
    pub(crate) faults: Vec<Fault>,
    pub(crate) latency: Duration,
    rng: SplitMix64,
}

impl FaultBook {
    pub(crate) fn new(faults: Vec<Fault>, latency: Duration, seed: u64) -> FaultBook {
        FaultBook {
            faults,
            latency,
            rng: SplitMix64::new(seed ^ 0x5EED_FA17),
        }
    }

    /// The action to apply to a request to `endpoint`, if any fault fires.
    pub(crate) fn take(&mut self, endpoint: Endpoint) -> Option<FaultAction> {
        let mut fired = None;
        for (i, fault) in self.faults.iter_mut().enumerate() {
            if fault.endpoint.is_some_and(|e| e != endpoint) {
                continue;
            }
            match &mut fault.trigger {
                Trigger::Next(n) if *n > 0 => {
                    *n -= 1;
                    fired = Some((i, fault.action, *n == 0));
                }
                Trigger::Probability(p) if self.rng.unit() < *p => {
                    fired = Some((i, fault.action, false))
                }
                _ => continue,
            }
            break;
        }
        let (i, action, used_up) = fired?;
        if used_up {
            self.faults.remove(i);
        }
        Some(action)
    }
}

/// Middleware on each route: latency, then the fault (if one fires).
pub(crate) async fn inject(
    State((sim, endpoint)): State<(SimState, Endpoint)>,
    req: Request,
    next: Next,
) -> Response {
    let (latency, action) = sim.next_fault(endpoint);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let Some(action) = action else {
        return next.run(req).await;
    };
    tracing::debug!(endpoint = endpoint.name(), ?action, "injecting fault");
    let fail = |code: u16| {
        ApiError::Injected(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
    };
    match action {
        FaultAction::Delay(d) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        FaultAction::Fail(code) => fail(code).into_response(),
        FaultAction::FailAfter(code) => {
            let _performed = next.run(req).await;
            fail(code).into_response()
        }
        FaultAction::Drop => {
            let kill = req
                .extensions()
                .get::<ConnectInfo<ConnectionKill>>()
                .map(|c| c.0.clone());
            let _performed = next.run(req).await;
            match kill {
                // The connection fails on its first write: no byte of this answer leaves.
                Some(kill) => {
                    kill.kill();
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                None => sim.hang().await.into_response(),
            }
        }
        FaultAction::Hang => {
            let _performed = next.run(req).await;
            sim.hang().await.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for text in [
            "create:drop:1",
            "*:503:p0.25",
            "destroy:500-after:2",
            "search:delay=250ms:3",
            "show:hang:1",
            "manage:429:1",
        ] {
            let fault: Fault = text.parse().unwrap();
            assert_eq!(fault.to_string(), text);
        }
        let fault: Fault = "create:drop".parse().unwrap();
        assert_eq!(
            fault,
            Fault::next(Endpoint::CreateInstance, FaultAction::Drop)
        );
    }

    #[test]
    fn bad_text_names_the_problem() {
        let msg = |t: &str| t.parse::<Fault>().unwrap_err().to_string();
        assert!(msg("creat:drop").contains("unknown endpoint `creat`"));
        assert!(msg("create:200").contains("`200` is not an HTTP error status"));
        assert!(msg("create:drop:p2").contains("`p2` is not a probability"));
        assert!(msg("create").contains("no action"));
    }

    #[test]
    fn next_n_is_used_up_and_targets_its_endpoint_only() {
        let fault = Fault {
            endpoint: Some(Endpoint::CreateInstance),
            action: FaultAction::Fail(503),
            trigger: Trigger::Next(2),
        };
        let mut book = FaultBook::new(vec![fault], Duration::ZERO, 1);
        assert_eq!(book.take(Endpoint::SearchOffers), None);
        assert_eq!(
            book.take(Endpoint::CreateInstance),
            Some(FaultAction::Fail(503))
        );
        assert_eq!(
            book.take(Endpoint::CreateInstance),
            Some(FaultAction::Fail(503))
        );
        assert_eq!(book.take(Endpoint::CreateInstance), None);
        assert!(book.faults.is_empty());
    }

    #[test]
    fn probability_is_reproducible_from_the_seed() {
        let fault: Fault = "*:503:p0.5".parse().unwrap();
        let run = |seed| {
            let mut book = FaultBook::new(vec![fault.clone()], Duration::ZERO, seed);
            (0..64)
                .map(|_| book.take(Endpoint::ShowUser).is_some())
                .collect::<Vec<_>>()
        };
        let fired = run(3).iter().filter(|f| **f).count();
        assert_eq!(run(3), run(3));
        assert!((16..=48).contains(&fired), "p=0.5 fired {fired} of 64");
    }
}
