//! # cairn-simulation
//!
//! The deterministic simulation (turmoil, the in-memory disk model) and the history checker.
//! Not built yet: it arrives with the issue "Deterministic simulation".
