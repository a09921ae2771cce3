//! A GPU marketplace simulator speaking the subset of the Vast.ai REST API
//! that the `vastai` 1.9.1 CLI and SDK use. It is Warden's embedded default
//! upstream: try every door with no cloud account, and test the Vast proxy
//! against a peer whose clock, catalog and failures the test controls.
//!
//! # Endpoints
//! All answers are JSON with `Content-Type: application/json` exactly (the
//! CLI rejects `; charset=utf-8` on searches). Auth: `Authorization: Bearer
//! KEY` (all the CLI sends) or `?api_key=KEY`; otherwise 401.
//!
//! | call | answer |
//! |---|---|
//! | `GET /api/v0/users/current` | user object; `credit` falls with spend; includes `api_key` as Vast does |
//! | `GET /api/v0/gpu_names/unique/` (no key) | `{"gpu_names": [...]}` |
//! | `POST /api/v0/bundles/` (body = query), `PUT /api/v0/search/asks/` (`{"q": query}`), `GET /api/v0/bundles/?q=` | `{"offers": [...]}` |
//! | `PUT /api/v0/asks/{offer}/` | `{"success": true, "new_contract": id}` |
//! | `POST /api/v0/asks/bulk/` (`ids`) | `{"success": true, "new_contracts": [...]}` (all or none) |
//! | `PUT /api/v0/launch_instance/` (`q` + create fields) | as create, on the best matching offer |
//! | `GET /api/v1/instances/?select_filters=&order_by=&limit=&after_token=&select_cols=` | `{"instances", "next_token", "total_instances", "label_counts"}` |
//! | `GET /api/v0/instances/` | `{"instances": [...]}` |
//! | `GET /api/v0/instances/filters/` | `{"filters": [{actual_status, verification, gpu_name}]}` |
//! | `GET /api/v0/instances/{id}/` | `{"instances": row}` or `{"instances": null}` |
//! | `PUT /api/v0/instances/{id}/` (`state`, `label`), `PUT /api/v0/instances/` (`state`, `ids`) | `{"success": true}` |
//! | `DELETE /api/v0/instances/{id}/`, `DELETE /api/v0/instances/` (`instance_ids`) | `{"success": true}` |
//!
//! Errors: `{"success": false, "error": code, "msg": text}`: 400
//! `invalid_args`, 401 `invalid_user_key`, 404 `no_such_ask` (offer unknown
//! or rented), 404 `no_such_instance`, 404 `not_found` (no route).
//!
//! # Model
//! - **Offers**: generated from [`SimConfig::seed`]: RTX 3090/4090, RTX
//!   A6000, L40S, A100 PCIE/SXM4, H100 PCIE/SXM with 1, 2, 4 or 8 GPUs; each
//!   offer is one whole machine with price, reliability, place and the
//!   hardware fields named and typed as Vast sends them. Searches honour
//!   `eq neq gt gte lt lte in notin` with the CLI's value encodings (numbers
//!   as strings, `driver_version` as an integer, `geolocation` by country
//!   code), `order`, `limit` (default 64), `type` (`bid` prices at
//!   `min_bid`) and `allocated_storage` (its storage price is in `dph_total`).
//! - **Instances**: one account; every accepted key sees every instance, and
//!   each records the key that created it ([`InstanceInfo::owner_key`]). An
//!   instance holds its offer (`rented: true`, `rentable: false`) until it is
//!   destroyed, stopped or not. Created or started, it is `loading` for
//!   [`SimConfig::boot_delay`] on the sim clock, then `running`; stopped, it
//!   shows `actual_status: "exited"`; destroyed, it leaves every listing.
//! - **Cost**: loading and running accrue `dph_total` (GPU plus disk
//!   storage); stopped accrues storage only (`storage_cost` $/GB/month × GB /
//!   720 h). Kept in integer micro-dollars; the row field `total_cost` (USD,
//!   simulator only: Vast has no such field) and
//!   [`InstanceInfo::cost_micros`] give the cost so far, frozen at destroy.
//! - **Time** comes from a [`Clock`]; tests use a [`ManualClock`].
//! - **Faults** ([`Fault`]): latency, error statuses before or after the
//!   action is performed, dropped connections and hung requests, per
//!   endpoint, for the next N requests or with a seeded probability.
//!
//! # Simplified
//! No partial rentals of a machine's GPUs; no networking, ports, volumes,
//! templates, invoices, reboots or balance enforcement; bids are never
//! outbid; error codes and statuses are the simulator's best guess at Vast's.

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
