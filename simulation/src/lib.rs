//! # cairn-simulation
//!
//! The deterministic simulation of a Cairn cluster (turmoil, the in-memory disk model, one
//! seed for everything) and the history checker that judges its runs. See `DESIGN.md`.

pub mod auth_admin;
pub mod checker;
pub mod consumers;
pub mod disk;
pub mod faults;
pub mod group_churn;
pub mod history;
pub mod lifecycle;
pub mod net;
pub mod operator;
pub mod rng;
pub mod sim;
pub mod task_ids;
pub mod workload;
