//! The subcommands, one module each.

pub mod adm;
pub mod compile;
pub mod demo_origin;
pub mod serve;
pub mod test;
