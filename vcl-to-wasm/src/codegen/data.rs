//! Constants in linear memory: string literals and header names, stored
//! once each in the module's data segment.

use super::{too_many, Result};
use crate::abi;
use std::collections::HashMap;

/// The constant pool. Constants start at `base` (after the reserved low
/// bytes and the native-call scratch area), so no constant is at address 0
/// and even `""` packs to a nonzero value.
pub(crate) struct Pool {
    base: u32,
    bytes: Vec<u8>,
    index: HashMap<Vec<u8>, u32>,
}

impl Pool {
    pub(crate) fn new(base: u32) -> Pool {
        Pool {
            base: base.max(abi::RESERVED_LOW),
            bytes: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The packed string for a constant, adding it if new. A constant that
    /// occurs inside an earlier one (e.g. a suffix) is not searched for:
    /// exact duplicates are what VCL repeats (header names, literals).
    pub(crate) fn intern(&mut self, s: &[u8]) -> Result<i64> {
        let len = u32::try_from(s.len()).map_err(|_| too_many("constant bytes"))?;
        if len == 0 {
            return Ok(abi::pack(self.base, 0));
        }
        let off = match self.index.get(s) {
            Some(&off) => off,
            None => {
                let off =
                    u32::try_from(self.bytes.len()).map_err(|_| too_many("constant bytes"))?;
                self.bytes.extend_from_slice(s);
                self.index.insert(s.to_vec(), off);
                off
            }
        };
        let ptr = self
            .base
            .checked_add(off)
            .ok_or_else(|| too_many("constant bytes"))?;
        // The whole constant must be addressable, too.
        ptr.checked_add(len)
            .ok_or_else(|| too_many("constant bytes"))?;
        Ok(abi::pack(ptr, len))
    }

    pub(crate) fn str(&mut self, s: &str) -> Result<i64> {
        self.intern(s.as_bytes())
    }

    /// One past the last constant byte.
    pub(crate) fn end(&self) -> Result<u32> {
        u32::try_from(self.bytes.len())
            .ok()
            .and_then(|n| n.checked_add(self.base))
            .ok_or_else(|| too_many("constant bytes"))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}
