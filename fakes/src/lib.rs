//! Local stand-ins for tests, benches and the demo: launchers for the real AWS emulator
//! (moto) and the reference OCI registry (Debian's docker-registry), each on a free
//! loopback port and stopped when dropped.

pub mod emulators;
pub mod fault_proxy;
