//! The `govbus` command: the one-machine demo (`govbus run`) and tools that
//! talk to a running bus.

pub mod demo;
pub mod inspect;
pub mod operate;
