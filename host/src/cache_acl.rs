//! ACLs (Varnish's `vcc_acl` + `VRT_acl_match`): prefixes over IPv4 and
//! IPv6 where the most specific matching entry decides, and a negated
//! entry (`!"10.0.0.1"`) makes a match of that prefix a non-match.

use std::net::IpAddr;
use vcl_to_wasm::tir::AclDef;

/// One compiled entry.
#[derive(Clone, Debug)]
struct Entry {
    addr: IpAddr,
    bits: u8,
    negated: bool,
}

/// A compiled ACL.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    entries: Vec<Entry>,
}

fn prefix_match(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = bits.min(32);
            let mask = if m == 0 { 0 } else { u32::MAX << (32 - m) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = bits.min(128);
            let mask = if m == 0 { 0 } else { u128::MAX << (128 - m) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        (IpAddr::V4(a), IpAddr::V6(b)) | (IpAddr::V6(b), IpAddr::V4(a)) => b
            .to_ipv4_mapped()
            .is_some_and(|b| prefix_match(IpAddr::V4(a), IpAddr::V4(b), bits.min(32))),
    }
}

impl Acl {
    /// Builds an ACL; host names are resolved now (load time), and an
    /// unresolvable name is an error unless the entry is `( "optional" )`.
    pub fn build(def: &AclDef) -> Result<Acl, String> {
        let mut entries = Vec::new();
        for e in &def.entries {
            let addrs: Vec<IpAddr> = match e.addr.parse::<IpAddr>() {
                Ok(a) => vec![a],
                Err(_) => match std::net::ToSocketAddrs::to_socket_addrs(&(e.addr.as_str(), 0)) {
                    Ok(it) => it.map(|s| s.ip()).collect(),
                    Err(err) if !e.optional => {
                        return Err(format!(
                            "ACL {}: cannot resolve \"{}\" ({err}) at {}",
                            def.name, e.addr, e.location
                        ))
                    }
                    Err(_) => Vec::new(),
                },
            };
            for addr in addrs {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                entries.push(Entry {
                    addr,
                    bits: e.mask.unwrap_or(max).min(max),
                    negated: e.negated,
                });
            }
        }
        Ok(Acl { entries })
    }

    /// `ip ~ acl`.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let mut best: Option<(u8, bool)> = None;
        for e in &self.entries {
            if prefix_match(e.addr, ip, e.bits) && best.is_none_or(|(b, _)| e.bits > b) {
                best = Some((e.bits, !e.negated));
            }
        }
        best.is_some_and(|(_, ok)| ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcl_to_wasm::tir::AclEntry;

    fn entry(addr: &str, mask: Option<u8>, negated: bool) -> AclEntry {
        AclEntry {
            negated,
            addr: addr.into(),
            mask,
            ..AclEntry::default()
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let def = AclDef {
            name: "a".into(),
            entries: vec![
                entry("10.0.0.0", Some(8), false),
                entry("10.1.0.0", Some(16), true),
                entry("10.1.2.3", None, false),
                entry("::1", None, false),
            ],
            ..AclDef::default()
        };
        let acl = Acl::build(&def).expect("acl");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(acl.matches(ip("10.9.9.9")));
        assert!(!acl.matches(ip("10.1.9.9")));
        assert!(acl.matches(ip("10.1.2.3")));
        assert!(acl.matches(ip("::1")));
        assert!(!acl.matches(ip("11.0.0.1")));
    }
}
