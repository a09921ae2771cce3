//! A GPU marketplace simulator speaking the subset of the Vast.ai REST API
//! that the `vastai` 1.9.1 CLI and SDK use. It is Warden's embedded default
//! upstream: try every door with no cloud account, and test the Vast proxy
//! against a peer whose clock, catalog and failures the test controls.
//!
//! # Model
//! - **Offers**: a catalog generated from a seed ([`SimConfig::seed`]):
//!   RTX 3090/4090, RTX A6000, L40S, A100 PCIE/SXM4, H100 PCIE/SXM with 1, 2,
//!   4 or 8 GPUs, each offer one whole machine with its price, reliability,
//!   place and hardware fields named and typed as Vast sends them. Searches
//!   (`POST /api/v0/bundles/`) honour `eq neq gt gte lt lte in notin`,
//!   `order`, `limit` (default 64), `type` (`bid` prices at `min_bid`) and
//!   `allocated_storage` (priced into `dph_total`); see the `query` module.
//! - **Instances**: one simulated account; every accepted API key sees every
//!   instance, and each instance records the key that created it
//!   ([`InstanceInfo::owner_key`]). Renting an offer makes it `rented` (and
//!   not `rentable`) until the instance is destroyed, stopped or not.
//!   Lifecycle and cost are described in the `market` module: `loading` for
//!   [`SimConfig::boot_delay`], then `running`; stopped instances pay storage
//!   only. Row field `total_cost` (USD, simulator only) is the cost so far.
//! - **Time** comes from a [`Clock`]; tests use a [`ManualClock`].
//! - **Faults** ([`Fault`]): latency, error statuses before or after the
//!   action is performed, dropped connections and hung requests, per
//!   endpoint, for the next N requests or with a seeded probability.
//!
//! # Simplified
//! One machine per offer (no partial rentals of a machine's GPUs); no
//! networking, ports, volumes, templates, invoices or balance enforcement
//! (`credit` in `users/current` just decreases with spend); bids never get
//! outbid; errors use Vast's shape (`{"success": false, "error", "msg"}`) but
//! their exact codes and statuses are the simulator's best guess
//! (`no_such_ask` and `no_such_instance` answer 404, a bad key 401).

mod api;
mod catalog;
mod clock;
mod error;
mod faults;
mod market;
mod query;
mod serve;
mod state;

use axum::http::{Request, Uri};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use tower::ServiceExt;

pub use clock::{Clock, ManualClock};
pub use faults::{Endpoint, Fault, FaultAction, FaultParseError, Trigger};
pub use market::{InstanceInfo, InstanceStatus};
pub use serve::{serve, serve_state};
pub use state::{OfferInfo, SimConfig, SimState};

/// The simulator's routes, to mount at the root (paths start with `/api/v0`
/// or `/api/v1`). Repeated slashes in a path are collapsed first, since the
/// CLI sends `//api/v0/...` when its URL ends with a slash.
pub fn router(state: SimState) -> Router {
    let on = |endpoint: Endpoint, route: MethodRouter<SimState>| {
        route.layer(axum::middleware::from_fn_with_state(
            (state.clone(), endpoint),
            faults::inject,
        ))
    };
    let api = Router::new()
        .route(
            "/api/v0/users/current",
            on(Endpoint::ShowUser, get(api::show_user)),
        )
        .route(
            "/api/v0/users/current/",
            on(Endpoint::ShowUser, get(api::show_user)),
        )
        .route(
            "/api/v0/gpu_names/unique/",
            on(Endpoint::GpuNames, get(api::gpu_names)),
        )
        .route(
            "/api/v0/bundles/",
            on(
                Endpoint::SearchOffers,
                post(api::search_bundles).get(api::search_bundles_get),
            ),
        )
        .route(
            "/api/v0/search/asks/",
            on(Endpoint::SearchOffers, put(api::search_asks)),
        )
        .route(
            "/api/v0/asks/{id}/",
            on(Endpoint::CreateInstance, put(api::create_instance)),
        )
        .route(
            "/api/v0/asks/bulk/",
            on(Endpoint::CreateInstance, post(api::create_instances)),
        )
        .route(
            "/api/v0/launch_instance/",
            on(Endpoint::LaunchInstance, put(api::launch_instance)),
        )
        .route(
            "/api/v1/instances/",
            on(Endpoint::ShowInstances, get(api::show_instances_v1)),
        )
        .route(
            "/api/v0/instances/",
            on(Endpoint::ShowInstances, get(api::show_instances_v0))
                .merge(on(Endpoint::ManageInstance, put(api::manage_instances)))
                .merge(on(
                    Endpoint::DestroyInstance,
                    delete(api::destroy_instances),
                )),
        )
        .route(
            "/api/v0/instances/filters/",
            on(Endpoint::InstanceFilters, get(api::instance_filters)),
        )
        .route(
            "/api/v0/instances/{id}/",
            on(Endpoint::ShowInstance, get(api::show_instance))
                .merge(on(Endpoint::ManageInstance, put(api::manage_instance)))
                .merge(on(Endpoint::DestroyInstance, delete(api::destroy_instance))),
        )
        .fallback(api::no_route)
        .with_state(state.clone());
    Router::new().fallback_service(api.map_request(collapse_slashes))
}

fn collapse_slashes<B>(mut req: Request<B>) -> Request<B> {
    let path = req.uri().path();
    if path.contains("//") {
        let mut collapsed = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && collapsed.ends_with('/')) {
                collapsed.push(c);
            }
        }
        if let Some(query) = req.uri().query() {
            collapsed = format!("{collapsed}?{query}");
        }
        if let Ok(uri) = collapsed.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}
