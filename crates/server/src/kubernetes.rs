//! `warden k8s render` and `warden k8s diff`: the Kubernetes objects a
//! policy implies for each team (namespace, quota, defaults, roles, network
//! isolation, the admission webhook registration), written for
//! `kubectl apply --server-side -f -`, and the drift between them and what
//! a cluster holds. Warden does not apply anything itself.

pub mod diff;
pub mod render;
pub mod yaml;
