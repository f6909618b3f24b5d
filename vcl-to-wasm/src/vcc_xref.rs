//! Cross-checks after every body is read (Varnish's `vcc_xref`): recursion,
//! unused declarations, and whether what each subroutine does is legal in
//! every method it can be called from.

use crate::error::{Diagnostic, Span};
use crate::tir::SubId;
use crate::types::Method;
use crate::vcc_compile::{err, CResult, Checker, SymKind, UseKind};

/// Renders a "...in subroutine" style trailer with its source excerpt.
fn where_note(text: &str, span: &Span) -> String {
    let d = Diagnostic::new("", Some(span.clone())).to_string();
    format!("{}{}", text, d.trim_end_matches('\n'))
}

impl Checker {
    pub(crate) fn xref(&mut self) -> CResult<()> {
        self.check_unused()?;
        if !self.undefined.is_empty() {
            return Err(self.undefined.remove(0));
        }
        self.check_recursion()?;
        let reached = self.check_methods()?;
        self.check_impossible(&reached)?;
        Ok(())
    }

    /// A sub no method calls (possible with `vcc_err_unref` off) whose own
    /// uses allow no method at all could never run.
    fn check_impossible(&self, reached: &[bool]) -> CResult<()> {
        for (i, sub) in self.subs.iter().enumerate() {
            if sub.method.is_some() || sub.builtin || reached[i] {
                continue;
            }
            let mut mask = crate::types::MethodSet::ALL;
            for u in &sub.uses {
                mask = mask.intersect(u.allowed);
            }
            if mask.is_empty() {
                return Err(err("Impossible Subroutine", &sub.decl_spans[0]));
            }
        }
        Ok(())
    }

    fn check_recursion(&self) -> CResult<()> {
        // 0 = unvisited, 1 = on the stack, 2 = done.
        let mut state = vec![0u8; self.subs.len()];
        for start in 0..self.subs.len() {
            if state[start] != 0 {
                continue;
            }
            // Iterative DFS: (sub, next call index); `path` holds the call
            // spans that led here for the message.
            let mut stack: Vec<(SubId, usize)> = vec![(start as SubId, 0)];
            let mut path: Vec<Span> = Vec::new();
            state[start] = 1;
            while let Some((sub, i)) = stack.last().cloned() {
                let calls = &self.subs[sub as usize].calls;
                if i < calls.len() {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    let (callee, span) = &calls[i];
                    match state[*callee as usize] {
                        0 => {
                            state[*callee as usize] = 1;
                            path.push(span.clone());
                            stack.push((*callee, 0));
                        }
                        1 => {
                            let target = &self.subs[*callee as usize];
                            let mut d = err("Subroutine recurses on", &target.decl_spans[0]);
                            d.notes.push(where_note(
                                &format!("...called from \"{}\"\n", self.subs[sub as usize].name),
                                span,
                            ));
                            return Err(d);
                        }
                        _ => {}
                    }
                } else {
                    state[sub as usize] = 2;
                    stack.pop();
                    path.pop();
                }
            }
        }
        Ok(())
    }

    /// For each method, walk the subs it can reach and check every use
    /// against the method.
    fn check_methods(&self) -> CResult<Vec<bool>> {
        let mut reached = vec![false; self.subs.len()];
        for (mid, msub) in self.subs.iter().enumerate() {
            let Some(method) = msub.method else { continue };
            // (sub, chain of (caller name, call span)) pairs, depth first.
            let mut todo: Vec<(SubId, Vec<(SubId, Span)>)> = vec![(mid as SubId, Vec::new())];
            let mut seen = vec![false; self.subs.len()];
            while let Some((sid, chain)) = todo.pop() {
                if seen[sid as usize] {
                    continue;
                }
                seen[sid as usize] = true;
                reached[sid as usize] = true;
                let sub = &self.subs[sid as usize];
                for u in &sub.uses {
                    if u.allowed.contains(method) {
                        continue;
                    }
                    return Err(self.use_error(method, sid, &chain, u));
                }
                for (callee, span) in &sub.calls {
                    let mut c = chain.clone();
                    c.push((sid, span.clone()));
                    todo.push((*callee, c));
                }
            }
        }
        Ok(reached)
    }

    fn use_error(
        &self,
        method: Method,
        sid: SubId,
        chain: &[(SubId, Span)],
        u: &crate::vcc_compile::Use,
    ) -> Diagnostic {
        let sub = &self.subs[sid as usize];
        let direct = chain.is_empty();
        let prep = if direct { "in" } else { "from" };
        let m = method.sub_name();
        let mut d = match &u.what {
            UseKind::Read => err(format!("Not available {prep} subroutine '{m}'."), &u.span),
            UseKind::Set => err(format!("Cannot be set {prep} subroutine '{m}'."), &u.span),
            UseKind::Unset => err(format!("Cannot be unset {prep} subroutine '{m}'."), &u.span),
            UseKind::Action => err(
                format!("Not a valid action {prep} subroutine '{m}'."),
                &u.span,
            ),
            UseKind::Return(a) => err(format!("Invalid return \"{}\"", a.name()), &u.span),
            UseKind::SetReadOnly(read) if read.contains(method) => {
                err("Variable is read only.", &u.span)
            }
            UseKind::SetReadOnly(_) => {
                err(format!("Not available {prep} subroutine '{m}'."), &u.span)
            }
        };
        d.notes.push(where_note(
            &format!("...in subroutine \"{}\"\n", sub.name),
            &sub.decl_spans[0],
        ));
        if direct {
            d.notes.push(format!(
                "...which is the \"{}\" subroutine",
                method.sub_name()
            ));
        } else {
            for (caller, span) in chain.iter().rev() {
                d.notes.push(where_note(
                    &format!("...called from \"{}\"\n", self.subs[*caller as usize].name),
                    span,
                ));
            }
        }
        if let UseKind::Return(_) = u.what {
            d.notes.push(crate::returns::legal_returns_note(method));
        }
        d
    }

    fn check_unused(&mut self) -> CResult<()> {
        let mut unused: Vec<(&String, &crate::vcc_compile::Symbol)> = self
            .symbols
            .iter()
            .filter(|(_, s)| !s.builtin && s.refs == 0)
            .filter(|(_, s)| match s.kind {
                SymKind::Sub(id) => self.subs[id as usize].method.is_none(),
                SymKind::Backend(_) | SymKind::Acl(_) | SymKind::Probe(_) => true,
                SymKind::Vmod | SymKind::Object(_) => false,
            })
            .collect();
        // varnishd walks its symbol table, which is sorted by name.
        unused.sort_by(|a, b| a.0.cmp(b.0));
        let mut diags = Vec::new();
        for (name, s) in unused {
            let kind = match s.kind {
                SymKind::Sub(_) => "sub",
                SymKind::Backend(_) => "backend",
                SymKind::Acl(_) => "acl",
                _ => "probe",
            };
            diags.push(err(format!("Unused {} {}, defined:", kind, name), &s.span));
        }
        if diags.is_empty() {
            return Ok(());
        }
        if self.opts.err_unref {
            let mut first = diags.remove(0);
            first.notes.push("(That was just a warning)".to_string());
            first.notes.clear();
            return Err(first);
        }
        for mut d in diags {
            d.notes.push("(That was just a warning)".to_string());
            self.warnings.push(d);
        }
        Ok(())
    }
}
