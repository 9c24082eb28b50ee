//! The simulated fleet behind the observability and remediation servers: the pure
//! simulation ([`sim`]), its scenario files ([`scenario`]), its wire types ([`model`]) and
//! the `sre-fleet` HTTP service ([`http`]), which also speaks the Kubernetes API
//! ([`kube_api`]).

pub mod http;
pub mod kube_api;
pub mod model;
pub mod scenario;
pub mod sim;
