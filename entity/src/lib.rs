//! sea-orm entities of the sre-agent store.
//!
//! Only the service's `store` module may use this crate (see `ARCHITECTURE.md`): everything
//! else speaks the domain types in `sre_agent::incident`.

pub mod incidents;
