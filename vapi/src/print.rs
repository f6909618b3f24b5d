//! varnishlog's output: one line per record, in groups with a header per
//! transaction (`*   << Request  >> 1001`), or raw (`-g raw`: the VXID
//! and the record kind on every line).

use crate::dispatch::Transaction;
use crate::filter::Filter;
use crate::record::Record;
use crate::tag;
use std::io::{self, Write};

/// The data of a record as varnishlog prints it: text as is, "unsafe"
/// tags quoted with `%XX` escapes, binary tags as hex in brackets.
pub fn data(out: &mut impl Write, r: &Record) -> io::Result<()> {
    data_of(out, r.tag, &r.data)
}

/// [`data`] for `tag`'s record with data `d`.
pub fn data_of(out: &mut impl Write, t: tag::Tag, d: &[u8]) -> io::Result<()> {
    let flags = t.flags();
    if flags & tag::UNSAFE != 0 {
        out.write_all(b"\"")?;
        for &c in d {
            if (b' '..=b'~').contains(&c) {
                out.write_all(&[c])?;
            } else {
                write!(out, "%{c:02x}")?;
            }
        }
        out.write_all(b"\"")
    } else if flags & tag::BINARY != 0 {
        out.write_all(b"[")?;
        for c in d {
            write!(out, "{c:02x}")?;
        }
        out.write_all(b"]")
    } else {
        out.write_all(d)
    }
}

/// One record: `VXID TAG KIND DATA` (verbose) or `TAG DATA` (terse),
/// with varnishlog's column widths.
pub fn record(out: &mut impl Write, r: &Record, verbose: bool) -> io::Result<()> {
    line(out, r.vxid, r.tag, r.kind, &r.data, verbose)
}

/// [`record`] of a record's parts.
pub fn line(
    out: &mut impl Write,
    vxid: u64,
    tag: tag::Tag,
    kind: crate::record::Kind,
    d: &[u8],
    verbose: bool,
) -> io::Result<()> {
    // Laid out by hand: `write!` with a width pads one char at a time,
    // which was a quarter of the reader's time at full speed.
    const SPACES: &[u8; 16] = b"                ";
    let mut line = [0u8; 10 + 1 + 14 + 1 + 2];
    let mut n = 0;
    if verbose {
        let mut digits = [b' '; 20];
        let mut v = vxid;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let d = &digits[i.min(digits.len() - 10)..];
        if d.len() > 10 {
            out.write_all(d)?;
        } else {
            line[..10].copy_from_slice(d);
            n = 10;
        }
        line[n] = b' ';
        n += 1;
    }
    let name = tag.name().as_bytes();
    if name.len() >= 14 {
        out.write_all(&line[..n])?;
        out.write_all(name)?;
        n = 0;
    } else {
        line[n..n + name.len()].copy_from_slice(name);
        line[n + name.len()..n + 14].copy_from_slice(&SPACES[..14 - name.len()]);
        n += 14;
    }
    line[n] = b' ';
    n += 1;
    if verbose {
        line[n] = kind.letter() as u8;
        line[n + 1] = b' ';
        n += 2;
    }
    out.write_all(&line[..n])?;
    data_of(out, tag, d)?;
    out.write_all(b"\n")
}

/// A group of transactions, as varnishlog prints it (`VSL_PrintTransactions`):
/// a header per transaction at level 1 and up, records prefixed by their
/// level's dashes, a blank line after a group. `-b`/`-c` skip the other
/// kind of transaction; `-v` prints every record verbose.
pub fn group(
    out: &mut impl Write,
    g: &[Transaction],
    filter: &Filter,
    verbose_all: bool,
) -> io::Result<()> {
    use crate::dispatch::TxType;
    let mut delim = false;
    for t in g {
        if filter.client || filter.backend {
            let keep = match t.typ {
                TxType::Req => filter.client,
                TxType::Bereq => filter.backend,
                TxType::Raw => true,
                _ => false,
            };
            if !keep {
                continue;
            }
        }
        let verbose = t.level == 0 || verbose_all;
        if t.level > 0 {
            if t.level > 3 {
                write!(out, "*{}* ", t.level % 10)?;
            } else {
                write!(out, "{:<3} ", &"***"[..t.level as usize])?;
            }
            if verbose {
                write!(out, "{:11}", "")?;
            }
            write!(out, "{:<14} ", t.typ.label())?;
            if verbose {
                write!(out, "{:2}", "")?;
            }
            writeln!(out, "{:<10}", t.vxid)?;
            delim = true;
        }
        for r in &t.records {
            if !filter.matches(r) {
                continue;
            }
            if t.level > 3 {
                write!(out, "-{}- ", t.level % 10)?;
            } else if t.level > 0 {
                out.write_all([&b"-   "[..], b"--  ", b"--- "][t.level as usize - 1])?;
            }
            record(out, r, verbose)?;
        }
    }
    if delim {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::TxType;
    use crate::record::Kind;
    use crate::tag::Tag;

    fn r(vxid: u64, tag: Tag, data: &[u8]) -> Record {
        Record {
            vxid,
            tag,
            kind: Kind::Client,
            data: data.to_vec(),
        }
    }

    #[test]
    fn varnishlog_layout() {
        let g = vec![
            Transaction {
                level: 1,
                vxid: 2,
                parent: 0,
                typ: TxType::Req,
                reason: "rxreq".into(),
                records: vec![r(2, Tag::Begin, b"req 1 rxreq"), r(2, Tag::End, b"")],
            },
            Transaction {
                level: 2,
                vxid: 3,
                parent: 2,
                typ: TxType::Bereq,
                reason: "fetch".into(),
                records: vec![r(3, Tag::Hash, b"a\x01")],
            },
        ];
        let mut o = Vec::new();
        group(&mut o, &g, &Filter::new(), false).unwrap();
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "*   << Request  >> 2         \n-   Begin          req 1 rxreq\n-   End            \n**  << BeReq    >> 3         \n--  Hash           \"a%01\"\n\n"
        );
        let mut o = Vec::new();
        record(&mut o, &r(0, Tag::CLI, b"Rd ping"), true).unwrap();
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "         0 CLI            c Rd ping\n"
        );
    }
}
