//! Warden's server side: the doors (wire formats around the policy core),
//! the HTTP application, config loading and the policy test runner.

pub mod app;
pub mod cases;
pub mod config;
pub mod doors;
pub mod error;
pub mod recorder;

pub use app::{router, AppState, Application};
pub use error::DoorError;
