//! Text tables for CLI answers (Varnish's `vte.c`, `VCLI_VTE`): rows of
//! tab-separated cells become columns padded to a common width. Lines
//! that start with a blank pass through as they are and do not count.

/// At most this many columns (Varnish's MAXCOL).
const MAXCOL: usize = 10;

/// Lays out `src` for a terminal `width` wide: each column as wide as its
/// widest cell plus a gap of 1 to 3 blanks, whatever fits. Widths count
/// as Varnish counts them: a cell after a tab is one wider than its text.
pub fn vte(src: &str, width: usize) -> String {
    let mut w_col = [0usize; MAXCOL];
    let mut n_col = 0usize;
    let mut w_ln = 0usize;
    for line in src.split_inclusive('\n') {
        if line.starts_with(' ') {
            continue;
        }
        let mut cc = 0usize;
        let mut wc = 0usize;
        let mut wl = 0usize;
        for ch in line.chars() {
            if ch == '\t' || ch == '\n' {
                if cc < MAXCOL {
                    w_col[cc] = w_col[cc].max(wc);
                }
                cc += 1;
                wc = 0;
            }
            if ch == '\n' {
                n_col = n_col.max(cc);
                w_ln = w_ln.max(wl);
            } else {
                wc += 1;
                wl += 1;
            }
        }
    }
    if n_col == 0 {
        return src.to_string();
    }
    let nsp = (width.saturating_sub(w_ln) / n_col).clamp(1, 3);
    let mut out = String::with_capacity(src.len() * 2);
    for line in src.split_inclusive('\n') {
        if line.starts_with(' ') {
            out.push_str(line);
            continue;
        }
        let mut cc = 0usize;
        let mut wc = 0usize;
        for ch in line.chars() {
            match ch {
                '\t' => {
                    let to = w_col.get(cc).copied().unwrap_or(0) + nsp;
                    while wc < to {
                        out.push(' ');
                        wc += 1;
                    }
                    cc += 1;
                    wc = 0;
                }
                c => {
                    out.push(c);
                    wc += 1;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::vte;

    #[test]
    fn lays_out_backend_list_as_varnishd() {
        let src = "Backend name\tAdmin\tProbe\tHealth\tLast change\n\
                   vcl1.foo\tprobe\t2/8\tsick\tThu, 03 Dec 2026 01:11:46 GMT\n";
        assert_eq!(
            vte(src, 80),
            "Backend name   Admin    Probe    Health    Last change\n\
             vcl1.foo       probe    2/8      sick      Thu, 03 Dec 2026 01:11:46 GMT\n"
        );
    }

    #[test]
    fn blank_led_lines_pass_through() {
        let src = "a\tb\n Current states\nccc\td\n";
        assert_eq!(vte(src, 80), "a     b\n Current states\nccc   d\n");
    }
}
