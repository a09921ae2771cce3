//! Doors: one module per way a launch can reach Warden.

pub mod skypilot;
pub mod vast;
