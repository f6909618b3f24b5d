//! Compiler diagnostics, printed the way `varnishd -C` prints them.

use std::fmt;
use std::sync::Arc;

/// A source file as loaded (after `include` resolution each file is one of these).
#[derive(Debug)]
pub struct Source {
    /// The name shown in messages (the path as given).
    pub name: String,
    pub text: String,
}

/// A position in a source: byte offset into `Source::text`.
#[derive(Clone, Debug)]
pub struct Span {
    pub source: Arc<Source>,
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// 1-based line and column. Columns count tabs to the next multiple of
    /// eight, as varnishd's `Pos` does.
    pub fn line_col(&self) -> (usize, usize) {
        let text = &self.source.text;
        let start = floor_char_boundary(text, self.start.min(text.len()));
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (line, expanded_width(&text[line_start..start]) + 1)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Display width of `s` with tabs expanded to 8-column stops.
fn expanded_width(s: &str) -> usize {
    s.chars()
        .fold(0, |w, c| if c == '\t' { (w / 8 + 1) * 8 } else { w + 1 })
}

/// One error or warning.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    /// Extra lines after the source excerpt (e.g. "(That was just a warning)").
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Option<Span>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            notes: Vec::new(),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// The `varnishd -C` layout:
    ///
    /// ```text
    /// Message
    /// ('file.vcl' Line 3 Pos 5)
    /// sub vcl_recv {
    /// ----####------
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        if let Some(span) = &self.span {
            let (line, col) = span.line_col();
            if self.message.starts_with("Symbol not found") {
                // varnishd's two-position form for a symbol spanning a range.
                let end = Span {
                    source: span.source.clone(),
                    start: span.end.saturating_sub(1).max(span.start),
                    end: span.end,
                };
                writeln!(
                    f,
                    "At: ('{}' Line {} Pos {}) -- (Pos {})",
                    span.source.name,
                    line,
                    col,
                    end.line_col().1
                )?;
            } else {
                writeln!(f, "('{}' Line {} Pos {})", span.source.name, line, col)?;
            }
            let text = &span.source.text;
            let start = floor_char_boundary(text, span.start.min(text.len()));
            let line_start = text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            let line_end = text[start..]
                .find('\n')
                .map(|i| start + i)
                .unwrap_or(text.len());
            let end = floor_char_boundary(text, span.end.clamp(start, line_end));
            let src_line = text[line_start..line_end].trim_end_matches('\r');
            let mut shown = String::new();
            for c in src_line.chars() {
                if c == '\t' {
                    shown.push_str(&" ".repeat(8 - expanded_width(&shown) % 8));
                } else {
                    shown.push(c);
                }
            }
            writeln!(f, "{}", shown)?;
            let pre = expanded_width(&text[line_start..start]);
            let tok = expanded_width(&text[start..end]).max(1);
            let total = expanded_width(src_line).max(pre + tok);
            let marker = format!(
                "{}{}{}",
                "-".repeat(pre),
                "#".repeat(tok),
                "-".repeat(total - pre - tok)
            );
            writeln!(f, "{}", marker)?;
        }
        for n in &self.notes {
            writeln!(f, "{}", n)?;
        }
        Ok(())
    }
}

/// The errors of a failed compilation; the first is what varnishd would print.
#[derive(Clone, Debug, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            write!(f, "{}", d)?;
            writeln!(f)?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}
