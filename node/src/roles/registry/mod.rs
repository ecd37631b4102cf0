//! The registry role: services, their instances and endpoints, health checks run by the
//! holder, TTL heartbeats, and subscriptions with notifications (docs/registry.md).
//!
//! - [`validate`]: the rules for names, endpoints, tags, metadata, checks and subscriptions
//!   (pure; every refusal names its field).
//! - [`json`]: registrations parsed from HTTP JSON and instances rendered back; the stored
//!   record is the same JSON (pure).
//! - [`health`]: flap damping, how check outcomes become a status (pure).
//! - [`seed`]: seed 002's register/unregister shapes translated (pure).
//! - [`service`]: the operations over the namespace's records, and the holder's soft state.
//! - [`checks`]: the prober, on the holder only, following the namespace's log.
//! - [`subscriptions`]: subscriptions stored as attachments, delivered in order from a
//!   durable cursor, with periodic reconciles.
//! - [`quic`] and [`http`]: the front ends.
//!
//! Instances are namespace records (kind `instance`, name `service/instance`), so they move
//! with the namespace, appear in its revision log and reach watches, SSE, webhooks and agents
//! with no machinery of their own.

pub mod checks;
pub mod health;
pub mod http;
pub mod json;
pub mod quic;
pub mod seed;
pub mod service;
pub mod subscriptions;
pub mod validate;

pub use service::RegistryService;
