//! taskledger-bridge: will republish every event to Pulse (AMQP, lapin) in Taskcluster's
//! exchange, routing-key and message format. Not built yet (issue 5); the crate exists so the
//! workspace layout and its dependency rules are in place.
