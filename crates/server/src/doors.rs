//! Doors: one module per way a launch can reach Warden.

pub mod kubernetes;
pub mod skypilot;
pub mod vast;
