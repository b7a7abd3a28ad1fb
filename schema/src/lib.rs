//! The contract every Tally service shares.
//!
//! Ingest writes [`event::Event`] records to shard streams, the streamer folds
//! them into the key-map under [`keys::Keyspace`], and the gateway reads the
//! key-map back as the SQL tables listed in [`catalog`]. Keeping the record
//! format, the key layout and the table catalog in one small crate means a
//! change to any of them is one change, seen by all three services at once.
//!
//! - [`event`]: the stream record (field names, encoding, decoding).
//! - [`entry`]: stream entries of one or several records, read from replies.
//! - [`keys`]: shard routing by site, hash tags, every Redis key name.
//! - [`grain`]: minute/hour/day buckets and their labels.
//! - [`source`]: referrer source, channel and UTM tags, derived on decode.
//! - [`report`]: the reports' dimensions and measures and their hash fields.
//! - [`catalog`]: the SQL tables, their columns and types.
//! - [`site`]: validation of site domains and the site registry.
//! - [`store`]: one Redis connection type over a single node or a Cluster.
//! - [`ops`]: `/healthz`, `/metrics` and the shutdown signal every service uses.

pub mod catalog;
pub mod entry;
pub mod event;
pub mod grain;
pub mod keys;
pub mod ops;
pub mod report;
pub mod site;
pub mod source;
pub mod store;

pub use event::Event;
pub use grain::Grain;
pub use keys::{Keyspace, Shard};
