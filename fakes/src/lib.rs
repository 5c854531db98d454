//! Local stand-ins for tests, benches and the demo: launchers for moto and the
//! reference registry, a fault-injecting proxy for AWS calls, and stateful fakes of the
//! SaaS APIs the jobs call (QuickBooks Online so far).

pub mod emulators;
pub mod fault_proxy;
pub mod qbo;
pub mod server;
