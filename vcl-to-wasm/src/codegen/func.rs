//! A function body under construction.

use super::enc_val;
use crate::abi::ValType;
use std::collections::HashMap;
use wasm_encoder::{Function, Instruction, MemArg};

/// Instructions and locals of one function. Temporaries are taken with
/// [`FuncBuilder::local`] and handed back with [`FuncBuilder::release`], so
/// a long subroutine reuses a handful of locals.
pub(crate) struct FuncBuilder {
    nparams: u32,
    locals: Vec<ValType>,
    free: HashMap<ValType, Vec<u32>>,
    code: Vec<Instruction<'static>>,
}

impl FuncBuilder {
    pub(crate) fn new(nparams: u32) -> FuncBuilder {
        FuncBuilder {
            nparams,
            locals: Vec::new(),
            free: HashMap::new(),
            code: Vec::new(),
        }
    }

    /// A local of type `t` not in use.
    pub(crate) fn local(&mut self, t: ValType) -> u32 {
        if let Some(i) = self.free.get_mut(&t).and_then(|v| v.pop()) {
            return i;
        }
        self.locals.push(t);
        self.nparams + self.locals.len() as u32 - 1
    }

    /// Returns a temporary taken with [`FuncBuilder::local`].
    pub(crate) fn release(&mut self, t: ValType, i: u32) {
        self.free.entry(t).or_default().push(i);
    }

    pub(crate) fn emit(&mut self, i: Instruction<'static>) {
        self.code.push(i);
    }

    pub(crate) fn emit_all<I: IntoIterator<Item = Instruction<'static>>>(&mut self, is: I) {
        self.code.extend(is);
    }

    /// The finished function (an `end` is appended).
    pub(crate) fn finish(mut self) -> Function {
        self.code.push(Instruction::End);
        let mut f = Function::new_with_locals_types(self.locals.iter().copied().map(enc_val));
        for i in &self.code {
            f.instruction(i);
        }
        f
    }
}

/// A memory access at a constant offset with natural alignment `align`
/// (log2 bytes).
pub(crate) const fn mem(offset: u32, align: u32) -> MemArg {
    MemArg {
        offset: offset as u64,
        align,
        memory_index: 0,
    }
}

/// A memory access without alignment promise (byte-aligned).
pub(crate) const fn mem8(offset: u32) -> MemArg {
    mem(offset, 0)
}
