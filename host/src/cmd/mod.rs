//! The subcommands, one module each.

pub mod adm;
pub mod compile;
pub mod demo_origin;
pub mod instance;
pub mod log;
pub mod serve;
pub mod stat;
pub mod test;
