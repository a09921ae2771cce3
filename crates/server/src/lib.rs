//! Warden's server side: the doors (wire formats around the policy core),
//! the HTTP application, config loading, the policy test runner and the
//! usage sync with SkyPilot's API server.

pub mod alerts;
pub mod api;
pub mod app;
pub mod application;
pub mod auth;
mod bytes;
pub mod cases;
pub mod config;
pub mod cork;
pub mod doors;
pub mod error;
pub mod gate;
pub mod http_client;
mod json_text;
pub mod kubernetes;
pub mod logging;
pub mod oidc;
pub mod recorder;
pub mod redact;
pub mod replay;
pub mod reports;
pub mod secret;
pub mod tls;

pub use app::{router, AppState};
pub use application::{Application, StartError};
pub use error::DoorError;
