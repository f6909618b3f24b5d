//! Varnish's log API, the reading side of Varnish's `libvarnishapi`, for
//! Shellac: the VSL tags ([`tag`]), records and their wire form
//! ([`record`]), grouping records into transactions ([`dispatch`]), the
//! query language of `varnishlog -q` ([`query`]), record filters
//! (`-i -I -x -X -b -c`, [`filter`]) and varnishlog's and varnishncsa's
//! output ([`print`], [`ncsa`]).
//!
//! Both `shellac log` and `shellac test` (`logexpect`) read the log
//! through this crate, so a test and an operator see the same thing.

#![warn(missing_docs)]

pub mod dispatch;
pub mod fast;
pub mod filter;
pub mod fmt;
pub mod ncsa;
pub mod print;
pub mod query;
pub mod record;
pub mod shm;
pub mod stream;
pub mod tag;

pub use dispatch::{Dispatcher, Fed, Group, Grouping, Transaction, TxType};
pub use filter::Filter;
pub use query::{Query, QueryError};
pub use record::{Item, Kind, Record};
pub use tag::{Tag, TagError};
