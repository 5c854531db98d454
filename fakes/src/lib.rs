//! Local stand-ins for tests, benches and the demo: launchers for moto and the
//! reference registry, a fault-injecting proxy for AWS calls, and stateful fakes of the
//! SaaS APIs the jobs call (QuickBooks Online, Control Room, ClickUp, Microsoft Graph).

// The fakes' helpers return an axum error response itself; boxing it would add noise.
#![allow(clippy::result_large_err)]

pub mod aws_seed;
pub mod clickup;
pub mod consistency;
pub mod control;
pub mod control_room;
pub mod emulators;
pub mod fargate;
pub mod fault_proxy;
pub mod generate;
pub mod graph;
pub mod qbo;
pub mod server;
