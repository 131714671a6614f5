//! Real-process tests: `cairn node` processes on free loopback ports with temporary data
//! directories, killed with SIGKILL where the test says so. One test binary, one module per
//! concern.

mod auth;
mod bad_input;
mod cli;
mod config;
mod corruption;
mod dcb;
mod deploy;
mod dev_process;
mod erase;
mod failover;
mod first_hour;
mod groups;
mod harness;
mod hostile_connections;
mod idempotency;
mod indexes;
mod lifecycle;
mod load;
mod membership;
mod observability;
mod prometheus_text;
mod rolling_restart;
mod scavenge;
mod subscriptions;
mod tls;
mod walkthrough;
