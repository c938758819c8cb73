//! Muster: a business-continuity notification cascade.
//!
//! Layers, inner to outer: [`domain`] values, the pure [`engine`], the
//! [`policy`] it applies, the [`ports`] the use cases in [`app`] are written
//! against, and the [`adapters`] that implement them (memory here; AWS in its
//! own crate so that local builds never compile an SDK).

pub mod adapters;
pub mod app;
pub mod audit;
pub mod directory;
pub mod domain;
pub mod embedded;
pub mod engine;
pub mod error;
pub mod policy;
pub mod ports;
pub mod ratelimit;
pub mod secret;

pub use error::{Error, Result};
pub mod api;
pub mod drill;
pub mod events;
#[cfg(feature = "fuzz")]
pub mod fuzz;
