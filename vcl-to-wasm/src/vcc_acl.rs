//! ACL declarations (Varnish's `vcc_acl`).
//!
//! IP literals are checked here; host names are kept for the host to
//! resolve at load time (compiling never needs DNS).

use crate::ast;
use crate::tir::{AclDef, AclEntry};
use crate::vcc_compile::{err, CResult, Checker, SymKind};
use std::net::IpAddr;

impl Checker {
    pub(crate) fn declare_acl(&mut self, a: &ast::Acl) -> CResult<()> {
        let id = self.meta.acls.len() as u32;
        self.define(&a.name, SymKind::Acl(id), false)?;
        let mut def = AclDef {
            name: a.name.name.clone(),
            ..AclDef::default()
        };
        let mut pedantic = false;
        for (on, flag) in &a.flags {
            match flag.name.as_str() {
                "log" => def.log = *on,
                "table" => def.table = *on,
                "pedantic" => pedantic = *on,
                "fold" => {}
                _ => return Err(err("Expected a flag at:", &flag.span)),
            }
        }
        for e in &a.entries {
            let (line, col) = e.addr_span.line_col();
            // 7.1 also takes the mask inside the string: "10.0.0.0/8".
            let mut e = e.clone();
            if let Some((addr, bits)) = e.addr.clone().split_once('/') {
                if e.mask.is_some() {
                    return Err(err("/mask only allowed once", &e.addr_span));
                }
                let Ok(b) = bits.parse::<u32>() else {
                    return Err(err(".../mask is not numeric.", &e.addr_span));
                };
                e.addr = addr.to_string();
                e.mask = Some((b, e.addr_span.clone()));
            }
            let e = &e;
            let ip: Option<IpAddr> = e.addr.parse().ok();
            let width = match ip {
                Some(IpAddr::V4(_)) => 32,
                Some(IpAddr::V6(_)) => 128,
                None => 128,
            };
            if let Some((bits, span)) = &e.mask {
                if *bits > width {
                    return Err(err(
                        format!(
                            "Too wide mask (/{}) for IPv{} address",
                            bits,
                            if width == 32 { 4 } else { 6 }
                        ),
                        span,
                    ));
                }
                if pedantic {
                    if let Some(ip) = ip {
                        if !network_bits_only(ip, *bits) {
                            return Err(err("Non-zero bits in masked part", &e.addr_span));
                        }
                    }
                }
            }
            if let Some(prev) = def
                .entries
                .iter()
                .find(|p| p.addr == e.addr && p.mask == e.mask.as_ref().map(|(b, _)| *b as u8))
            {
                if prev.negated != e.negated {
                    return Err(err("Conflicting ACL entries:", &e.addr_span));
                }
            }
            // A parenthesised (optional) entry that cannot resolve is
            // skipped when the VCL loads, never refused.
            if ip.is_none() && !e.optional && !crate::vcc_backend::valid_hostname(&e.addr) {
                return Err(err(
                    format!("DNS lookup({}): Name or service not known", e.addr),
                    &e.addr_span,
                ));
            }
            def.entries.push(AclEntry {
                negated: e.negated,
                addr: e.addr.clone(),
                mask: e.mask.as_ref().map(|(b, _)| *b as u8),
                optional: e.optional,
                location: format!("{}:{}:{}", e.addr_span.source.name, line, col),
            });
        }
        self.meta.acls.push(def);
        Ok(())
    }
}

fn network_bits_only(ip: IpAddr, bits: u32) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            bits >= 32 || n & (u32::MAX >> bits) == 0
        }
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            bits >= 128 || n & (u128::MAX >> bits) == 0
        }
    }
}
