//! The queue service's domain: tasks, runs, task groups, artifacts, workers.

mod apply;
mod artifacts;
pub mod decide;
pub mod events;
pub mod json;
pub mod model;
mod upkeep;

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
mod tests;

pub use artifacts::*;
pub use decide::*;
pub use events::*;
pub use model::*;
pub use upkeep::*;
