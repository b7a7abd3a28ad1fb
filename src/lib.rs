//! The `tally` command: runs the services, manages sites, generates traffic.
//!
//! - [`up`]: all three services in one process, with a private Redis when
//!   none is configured, and optional demo traffic.
//! - [`loadgen`]: realistic synthetic traffic against an ingest URL.
//! - [`redis_setup`]: resolving `REDIS_URL`, or starting a private server.

pub mod loadgen;
pub mod redis_setup;
pub mod up;
