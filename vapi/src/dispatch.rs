//! Grouping records into transactions (libvarnishapi's VSLQ dispatch):
//! `-g raw` (every record alone), `vxid` (each transaction when it ends),
//! `request` (a client request with its backend requests and ESI
//! includes) and `session` (a whole session).
//!
//! Records of one transaction may arrive in several batches, and a
//! child's records before its parent's (a backend request ends before
//! the request that started it). Transactions are linked both ways
//! Varnish links them: a child's `Begin` names its parent, a parent's
//! `Link` names its children. A group is handed out once its root and
//! every transaction under it has ended; one that has not ended after
//! the timeout (varnishlog's `-T`, 120 s) is forced to (a `VSL timeout`
//! and an `End synth` are added), and so is everything left at
//! [`Dispatcher::flush`] (`VSL flush`).

use crate::record::{DecodeError, Item, Kind, Record};
use crate::tag::Tag;
use rustc_hash::FxHashMap as HashMap;
use std::time::{Duration, Instant};

/// How records are grouped (varnishlog's `-g`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Every record on its own, VXID 0 included.
    Raw,
    /// Each transaction on its own.
    Vxid,
    /// A client request with what it caused.
    Request,
    /// A session with its requests.
    Session,
}

impl Grouping {
    /// By name, or a unique prefix of one (`-g req`).
    pub fn parse(s: &str) -> Option<Grouping> {
        let all = [
            ("raw", Grouping::Raw),
            ("vxid", Grouping::Vxid),
            ("request", Grouping::Request),
            ("session", Grouping::Session),
        ];
        if let Some(g) = all.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Some(g.1);
        }
        let mut m = all.iter().filter(|(n, _)| {
            !s.is_empty() && n.len() >= s.len() && n[..s.len()].eq_ignore_ascii_case(s)
        });
        match (m.next(), m.next()) {
            (Some(g), None) => Some(g.1),
            _ => None,
        }
    }
}

/// What kind of transaction it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxType {
    /// Not known (yet).
    Unknown,
    /// A session.
    Sess,
    /// A client request.
    Req,
    /// A backend request.
    Bereq,
    /// A single record (`-g raw`).
    Raw,
}

impl TxType {
    /// varnishlog's header label (`<< Request  >>`).
    pub fn label(self) -> &'static str {
        match self {
            TxType::Unknown => "<< Unknown  >>",
            TxType::Sess => "<< Session  >>",
            TxType::Req => "<< Request  >>",
            TxType::Bereq => "<< BeReq    >>",
            TxType::Raw => "<< Record   >>",
        }
    }

    /// From a `Begin` record's first word.
    pub fn parse(s: &str) -> TxType {
        match s {
            "sess" => TxType::Sess,
            "req" => TxType::Req,
            "bereq" => TxType::Bereq,
            _ => TxType::Unknown,
        }
    }
}

/// One transaction of a group, as handed out.
#[derive(Clone, Debug)]
pub struct Transaction {
    /// 1 for the group's root, one more per generation (0 in `-g raw`).
    pub level: u32,
    /// Its VXID.
    pub vxid: u64,
    /// The VXID of the transaction above it in the group (0 for a root).
    pub parent: u64,
    /// Session, request or backend request.
    pub typ: TxType,
    /// Why it began (`rxreq`, `esi`, `fetch`, `pass`, `bgfetch`, …).
    pub reason: String,
    /// Its records, in order.
    pub records: Vec<Record>,
}

struct Vtx {
    typ: TxType,
    reason: String,
    parent: Option<u64>,
    children: Vec<u64>,
    records: Vec<Record>,
    /// Records in wire form not decoded yet (`-g vxid`, see
    /// [`Dispatcher::feed_raw`]): decoded into `records` only if the
    /// transaction does not end cleanly.
    raw: Vec<u8>,
    begun: bool,
    complete: bool,
    created: Instant,
}

impl Vtx {
    fn new() -> Vtx {
        Vtx {
            typ: TxType::Unknown,
            reason: String::new(),
            parent: None,
            children: Vec::new(),
            records: Vec::new(),
            raw: Vec::new(),
            begun: false,
            complete: false,
            created: Instant::now(),
        }
    }
}

/// `Begin`/`Link` data: `TYPE VXID REASON`.
fn parse_link(data: &str) -> Option<(TxType, u64, String)> {
    let mut it = data.split_whitespace();
    let t = TxType::parse(it.next()?);
    let v = it.next()?.parse().ok()?;
    let r = it.next()?.to_string();
    Some((t, v, r))
}

/// Groups records into transactions.
pub struct Dispatcher {
    grouping: Grouping,
    vtx: HashMap<u64, Vtx>,
    /// Incomplete transactions older than this are forced to end.
    pub timeout: Duration,
    /// At most this many incomplete transactions are kept (`-L`); the
    /// oldest is forced to end beyond it.
    pub limit: usize,
    /// Room for decoding one record at a time ([`Dispatcher::feed_raw`]).
    scratch: Vec<Item>,
}

/// A group handed out: its transactions, root first, then breadth
/// first.
pub type Group = Vec<Transaction>;

/// What [`Dispatcher::feed_raw`] made of a record.
pub enum Fed {
    /// Not a whole record: more bytes are needed.
    More,
    /// The record ended a transaction kept in wire form: all of it.
    Whole(Vec<u8>),
    /// Groups completed (often none), and the count of a `Lost` marker.
    Decoded(Vec<Group>, Option<u64>),
}

impl Dispatcher {
    /// A dispatcher for `grouping`.
    pub fn new(grouping: Grouping) -> Dispatcher {
        Dispatcher {
            grouping,
            vtx: HashMap::default(),
            timeout: Duration::from_secs(120),
            limit: 1000,
            scratch: Vec::new(),
        }
    }

    /// The grouping.
    pub fn grouping(&self) -> Grouping {
        self.grouping
    }

    /// Takes one record; returns the groups it completed.
    pub fn feed(&mut self, r: Record) -> Vec<Group> {
        if self.grouping == Grouping::Raw {
            return vec![vec![Transaction {
                level: 0,
                vxid: r.vxid,
                parent: 0,
                typ: TxType::Raw,
                reason: String::new(),
                records: vec![r],
            }]];
        }
        if r.vxid == 0 {
            return Vec::new();
        }
        let vxid = r.vxid;
        self.materialize(vxid);
        let v = self.vtx.entry(vxid).or_insert_with(Vtx::new);
        if v.complete {
            // A record after the end: Varnish reports it; we drop it.
            return Vec::new();
        }
        let tag = r.tag;
        self.take(vxid, r);
        if tag == Tag::End {
            if let Some(v) = self.vtx.get_mut(&vxid) {
                v.complete = true;
            }
            let mut out = Vec::new();
            self.ready_up(vxid, &mut out);
            return out;
        }
        let mut out = Vec::new();
        if self.vtx.len() > self.limit {
            self.force_oldest(&mut out);
        }
        out
    }

    /// Adds record `r` to its open transaction, reading what ties
    /// transactions together.
    fn take(&mut self, vxid: u64, r: Record) {
        let Some(v) = self.vtx.get_mut(&vxid) else {
            return;
        };
        let tag = r.tag;
        // Only Begin and Link are read here; the text of the rest is
        // left alone (this runs for every record the reader gets). A
        // Link only ties transactions together, which `-g vxid` never
        // does: there (a session's Link per request) it is not read.
        let links = self.grouping != Grouping::Vxid;
        let text = match tag {
            Tag::Begin if !v.begun => r.text().into_owned(),
            Tag::Link if links => r.text().into_owned(),
            _ => String::new(),
        };
        v.records.push(r);
        match tag {
            Tag::Begin if !v.begun => {
                v.begun = true;
                if let Some((t, p, reason)) = parse_link(&text) {
                    v.typ = t;
                    v.reason = reason;
                    self.link_parent(vxid, p);
                }
            }
            Tag::Link if links => {
                if let Some((t, c, reason)) = parse_link(&text) {
                    self.link_child(vxid, c, t, reason);
                }
            }
            _ => {}
        }
    }

    /// Takes one record in wire form (at the front of `rec`) without
    /// decoding it, where it can: with `-g vxid`, a transaction that
    /// starts with its `Begin` is kept as bytes until its `End`, and
    /// then handed back whole for [`crate::fast::print_txn`]. A
    /// session's `Link` per request came here one at a time; decoded
    /// and grouped, they were a tenth of what reading the log cost.
    /// Anything else (other groupings, a transaction whose start was
    /// not seen, a `Lost` marker) is decoded and fed as by
    /// [`Dispatcher::feed`]. Also returns how many bytes it took.
    pub fn feed_raw(&mut self, rec: &[u8]) -> Result<(Fed, usize), DecodeError> {
        let Some((vxid, t, _, d)) = crate::record::peek(rec) else {
            return Ok((Fed::More, 0));
        };
        let n = crate::record::HEADER + d.len();
        let rawable = self.grouping == Grouping::Vxid && vxid != 0 && t != 0 && {
            let v = self.vtx.get(&vxid);
            match v {
                None => t == Tag::Begin as u8,
                Some(v) => !v.complete && !v.raw.is_empty(),
            }
        };
        if !rawable {
            let mut items = std::mem::take(&mut self.scratch);
            items.clear();
            crate::record::decode(&rec[..n], &mut items)?;
            let mut groups = Vec::new();
            let mut lost = None;
            for item in items.drain(..) {
                match item {
                    Item::Record(r) => groups.extend(self.feed(r)),
                    Item::Lost(l) => lost = Some(l),
                }
            }
            self.scratch = items;
            return Ok((Fed::Decoded(groups, lost), n));
        }
        let v = self.vtx.entry(vxid).or_insert_with(Vtx::new);
        v.raw.extend_from_slice(&rec[..n]);
        if t == Tag::End as u8 {
            let raw = self.vtx.remove(&vxid).map(|v| v.raw).unwrap_or_default();
            return Ok((Fed::Whole(raw), n));
        }
        let mut out = Vec::new();
        if self.vtx.len() > self.limit {
            self.force_oldest(&mut out);
        }
        Ok((Fed::Decoded(out, None), n))
    }

    /// Decodes what a transaction holds in wire form into its records.
    fn materialize(&mut self, vxid: u64) {
        let raw = match self.vtx.get_mut(&vxid) {
            Some(v) if !v.raw.is_empty() => std::mem::take(&mut v.raw),
            _ => return,
        };
        let mut items = Vec::new();
        let mut at = 0;
        // (Only whole records were kept, checked as they came.)
        while let Ok(Some(n)) = crate::record::decode(&raw[at..], &mut items) {
            at += n;
        }
        for item in items {
            if let Item::Record(r) = item {
                self.take(vxid, r);
            }
        }
    }

    fn link_parent(&mut self, vxid: u64, p: u64) {
        if p == 0 || p == vxid || self.grouping == Grouping::Vxid {
            return;
        }
        let (typ, reason) = match self.vtx.get(&vxid) {
            Some(v) => (v.typ, v.reason.clone()),
            None => return,
        };
        if self.grouping == Grouping::Request && typ == TxType::Req && reason == "rxreq" {
            return;
        }
        if let Some(v) = self.vtx.get(&vxid) {
            if v.parent.is_some() {
                return;
            }
        }
        let pv = self.vtx.entry(p).or_insert_with(Vtx::new);
        if pv.complete {
            return;
        }
        if !pv.children.contains(&vxid) {
            pv.children.push(vxid);
        }
        if let Some(v) = self.vtx.get_mut(&vxid) {
            v.parent = Some(p);
        }
    }

    fn link_child(&mut self, vxid: u64, c: u64, t: TxType, reason: String) {
        if c == 0 || c == vxid || self.grouping == Grouping::Vxid {
            return;
        }
        let ptype = self.vtx.get(&vxid).map_or(TxType::Unknown, |v| v.typ);
        if self.grouping == Grouping::Request && ptype == TxType::Sess {
            return;
        }
        let cv = self.vtx.entry(c).or_insert_with(Vtx::new);
        if cv.parent.is_some() || cv.complete {
            return;
        }
        if cv.typ == TxType::Unknown {
            cv.typ = t;
            cv.reason = reason;
        }
        cv.parent = Some(vxid);
        if let Some(p) = self.vtx.get_mut(&vxid) {
            if !p.children.contains(&c) {
                p.children.push(c);
            }
        }
    }

    fn ready(&self, vxid: u64) -> bool {
        match self.vtx.get(&vxid) {
            Some(v) => v.complete && v.children.iter().all(|c| self.ready(*c)),
            None => true,
        }
    }

    /// After `vxid` ended: hands out its group if everything in it has.
    fn ready_up(&mut self, mut vxid: u64, out: &mut Vec<Group>) {
        loop {
            if !self.ready(vxid) {
                return;
            }
            match self.vtx.get(&vxid).and_then(|v| v.parent) {
                Some(p) => vxid = p,
                None => break,
            }
        }
        let Some(root) = self.vtx.get(&vxid) else {
            return;
        };
        let wanted = match self.grouping {
            Grouping::Session => root.typ == TxType::Sess,
            Grouping::Request => root.typ == TxType::Req,
            _ => true,
        };
        let group = self.take_group(vxid);
        if wanted {
            out.push(group);
        }
    }

    /// Removes a root and everything under it, breadth first.
    fn take_group(&mut self, root: u64) -> Group {
        let mut g: Group = Vec::new();
        let mut queue = vec![(root, 1u32, 0u64)];
        let mut i = 0;
        while i < queue.len() {
            let (vxid, level, parent) = queue[i];
            i += 1;
            let Some(v) = self.vtx.remove(&vxid) else {
                continue;
            };
            for c in &v.children {
                let cl = match self.vtx.get(c) {
                    Some(cv) if cv.reason == "restart" => level,
                    _ => level + 1,
                };
                queue.push((*c, cl, vxid));
            }
            g.push(Transaction {
                level,
                vxid,
                parent,
                typ: v.typ,
                reason: v.reason,
                records: v.records,
            });
        }
        g
    }

    /// Ends a transaction that will not end by itself.
    /// Ends an open transaction as varnishlog does: a `Begin … synth` if
    /// it had none, a `VSL` record saying why (`timeout`, `store
    /// overflow`, `flush`), an `End synth`.
    fn force(&mut self, vxid: u64, why: &str, out: &mut Vec<Group>) {
        self.materialize(vxid);
        let Some(v) = self.vtx.get_mut(&vxid) else {
            return;
        };
        if v.complete {
            return;
        }
        let kind = match v.typ {
            TxType::Bereq => Kind::Backend,
            _ => Kind::Client,
        };
        if !v.begun {
            let t = match v.typ {
                TxType::Sess => "sess",
                TxType::Req => "req",
                TxType::Bereq => "bereq",
                _ => "unknown",
            };
            v.records.insert(
                0,
                Record {
                    vxid,
                    tag: Tag::Begin,
                    kind,
                    data: format!("{t} 0 synth").into_bytes(),
                },
            );
            v.begun = true;
        }
        v.records.push(Record {
            vxid,
            tag: Tag::VSL,
            kind,
            data: why.as_bytes().to_vec(),
        });
        v.records.push(Record {
            vxid,
            tag: Tag::End,
            kind,
            data: b"synth".to_vec(),
        });
        v.complete = true;
        self.ready_up(vxid, out);
    }

    fn force_oldest(&mut self, out: &mut Vec<Group>) {
        let oldest = self
            .vtx
            .iter()
            .filter(|(_, v)| !v.complete)
            .min_by_key(|(_, v)| v.created)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.force(k, "store overflow", out);
        }
    }

    /// Forces transactions older than the timeout to end; returns the
    /// groups that completes.
    pub fn expire(&mut self) -> Vec<Group> {
        let now = Instant::now();
        let old: Vec<u64> = self
            .vtx
            .iter()
            .filter(|(_, v)| !v.complete && now.duration_since(v.created) >= self.timeout)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in old {
            self.force(k, "timeout", &mut out);
        }
        out
    }

    /// Ends everything still open (the end of `varnishlog -d`).
    pub fn flush(&mut self) -> Vec<Group> {
        let mut out = Vec::new();
        let mut open: Vec<(Instant, u64)> = self
            .vtx
            .iter()
            .filter(|(_, v)| !v.complete)
            .map(|(k, v)| (v.created, *k))
            .collect();
        open.sort();
        for (_, k) in open {
            self.force(k, "flush", &mut out);
        }
        // Complete transactions still waiting for a parent that never
        // came (its records were lost).
        let stuck: Vec<u64> = self.vtx.keys().copied().collect();
        for k in stuck {
            if self.vtx.contains_key(&k) {
                self.ready_up(k, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vxid: u64, tag: Tag, kind: Kind, data: &str) -> Record {
        Record {
            vxid,
            tag,
            kind,
            data: data.as_bytes().to_vec(),
        }
    }

    /// A session 1000 with request 1001 whose backend request 1002 ends
    /// first, in the order Shellac flushes them.
    fn feed_all(d: &mut Dispatcher) -> Vec<Group> {
        let c = Kind::Client;
        let b = Kind::Backend;
        let mut out = Vec::new();
        for r in [
            rec(1002, Tag::Begin, b, "bereq 1001 fetch"),
            rec(1002, Tag::BereqURL, b, "/"),
            rec(1002, Tag::End, b, ""),
            rec(1001, Tag::Begin, c, "req 1000 rxreq"),
            rec(1001, Tag::ReqURL, c, "/"),
            rec(1001, Tag::Link, c, "bereq 1002 fetch"),
            rec(1001, Tag::End, c, ""),
            rec(1000, Tag::Begin, c, "sess 0 HTTP/1"),
            rec(1000, Tag::Link, c, "req 1001 rxreq"),
            rec(1000, Tag::End, c, ""),
        ] {
            out.extend(d.feed(r));
        }
        out
    }

    #[test]
    fn vxid_grouping() {
        let mut d = Dispatcher::new(Grouping::Vxid);
        let g = feed_all(&mut d);
        let ids: Vec<u64> = g.iter().map(|g| g[0].vxid).collect();
        assert_eq!(ids, vec![1002, 1001, 1000]);
        assert!(g.iter().all(|g| g.len() == 1 && g[0].level == 1));
    }

    #[test]
    fn request_grouping() {
        let mut d = Dispatcher::new(Grouping::Request);
        let g = feed_all(&mut d);
        assert_eq!(g.len(), 1);
        let ids: Vec<(u64, u32)> = g[0].iter().map(|t| (t.vxid, t.level)).collect();
        assert_eq!(ids, vec![(1001, 1), (1002, 2)]);
        assert!(d.vtx.is_empty());
    }

    #[test]
    fn session_grouping() {
        let mut d = Dispatcher::new(Grouping::Session);
        let g = feed_all(&mut d);
        assert_eq!(g.len(), 1);
        let ids: Vec<(u64, u32)> = g[0].iter().map(|t| (t.vxid, t.level)).collect();
        assert_eq!(ids, vec![(1000, 1), (1001, 2), (1002, 3)]);
    }

    #[test]
    fn flush_forces_open_transactions() {
        let mut d = Dispatcher::new(Grouping::Vxid);
        assert!(d.feed(rec(5, Tag::ReqURL, Kind::Client, "/")).is_empty());
        let g = d.flush();
        assert_eq!(g.len(), 1);
        let tags: Vec<Tag> = g[0][0].records.iter().map(|r| r.tag).collect();
        assert_eq!(tags, vec![Tag::Begin, Tag::ReqURL, Tag::VSL, Tag::End]);
        assert_eq!(g[0][0].records[2].data, b"flush");
        assert_eq!(Grouping::parse("req"), Some(Grouping::Request));
        assert_eq!(Grouping::parse("r"), None);
    }

    /// In wire form, one after the other.
    fn wire(recs: &[Record]) -> Vec<u8> {
        let mut b = Vec::new();
        for r in recs {
            crate::record::encode(&mut b, r);
        }
        b
    }

    #[test]
    fn raw_transactions_come_back_whole_or_as_if_decoded() {
        let c = Kind::Client;
        let sess = [
            rec(1000, Tag::Begin, c, "sess 0 HTTP/1"),
            rec(1000, Tag::Link, c, "req 1001 rxreq"),
            rec(1000, Tag::Link, c, "req 1002 rxreq"),
        ];
        let end = rec(1000, Tag::End, c, "");
        // A session seen from its Begin: kept as bytes, handed back whole.
        let mut d = Dispatcher::new(Grouping::Vxid);
        let bytes = wire(&sess);
        let mut at = 0;
        while at < bytes.len() {
            match d.feed_raw(&bytes[at..]).unwrap() {
                (Fed::Decoded(g, None), n) if g.is_empty() => at += n,
                _ => panic!("held"),
            }
        }
        let e = wire(std::slice::from_ref(&end));
        match d.feed_raw(&e).unwrap() {
            (Fed::Whole(w), n) => {
                assert_eq!(n, e.len());
                assert_eq!(
                    w,
                    wire(&[
                        sess[0].clone(),
                        sess[1].clone(),
                        sess[2].clone(),
                        end.clone()
                    ])
                );
            }
            _ => panic!("not whole"),
        }
        // Ended early (a dump's end): the same group as decoded records.
        let mut raw = Dispatcher::new(Grouping::Vxid);
        let mut decoded = Dispatcher::new(Grouping::Vxid);
        let mut at = 0;
        while at < bytes.len() {
            at += raw.feed_raw(&bytes[at..]).unwrap().1;
        }
        for r in &sess {
            assert!(decoded.feed(r.clone()).is_empty());
        }
        assert_eq!(
            format!("{:?}", raw.flush()),
            format!("{:?}", decoded.flush())
        );
        // No Begin seen: decoded and grouped as before.
        let mut d = Dispatcher::new(Grouping::Vxid);
        let l = wire(&sess[1..2]);
        assert!(matches!(d.feed_raw(&l).unwrap(), (Fed::Decoded(g, None), _) if g.is_empty()));
        match d.feed_raw(&e).unwrap() {
            (Fed::Decoded(g, None), _) => assert_eq!(g.len(), 1),
            _ => panic!("not decoded"),
        }
        // Half a record: more is needed.
        assert!(matches!(d.feed_raw(&e[..3]).unwrap(), (Fed::More, 0)));
    }
}
