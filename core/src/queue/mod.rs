//! The queue service's domain: tasks, runs, task groups, artifacts, workers.

pub mod decide;
pub mod events;
pub mod json;
pub mod model;

#[cfg(test)]
mod tests;

pub use decide::*;
pub use events::*;
pub use model::*;
