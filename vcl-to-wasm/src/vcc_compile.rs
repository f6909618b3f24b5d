//! The compiler driver and the checker's shared state (Varnish's
//! `vcc_compile` and `vcc_symb`): load, parse, merge the builtin VCL,
//! declare symbols, check every subroutine, cross-check references, and hand
//! the typed program to the code generator.

use crate::ast;
use crate::error::{Diagnostic, Diagnostics, Source, Span};
use crate::tir::{self, Metadata, ObjectId, SubId};
use crate::types::{Action, Method, MethodSet};
use crate::vcc_parse::Parser;
use crate::vcc_token::Loader;
use crate::vmods;
use crate::{CompileOptions, Compiled};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The builtin VCL, appended to every program as Varnish does.
pub const BUILTIN_VCL: &str = include_str!("builtin.vcl");

/// Compiles the VCL file at `path`.
pub fn compile_file(path: &Path, opts: &CompileOptions) -> Result<Compiled, Diagnostics> {
    let text = std::fs::read(path).map_err(|e| {
        Diagnostic::new(
            format!("Cannot read file '{}' ({})", path.display(), e),
            None,
        )
    })?;
    let text = String::from_utf8_lossy(&text).into_owned();
    compile_source(&path.display().to_string(), &text, path.parent(), opts)
}

/// The stack the compiler runs on. Parsing and checking recurse once per
/// nesting level (bounded by the parser's depth limit); a dedicated stack
/// makes that bound safe on any caller's thread, including small ones.
const COMPILER_STACK: usize = 64 << 20;

/// Runs `f` on a thread with [`COMPILER_STACK`] bytes of stack. A panic in
/// the compiler (a bug) becomes an error for this one VCL, never a crash of
/// the process loading it.
fn on_big_stack<T: Send>(
    f: impl FnOnce() -> Result<T, Diagnostics> + Send,
) -> Result<T, Diagnostics> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("vcc".into())
            .stack_size(COMPILER_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| Diagnostic::new(format!("Cannot start the VCL compiler: {e}"), None))?;
        handle.join().unwrap_or_else(|_| {
            Err(Diagnostic::new("Internal error in the VCL compiler", None).into())
        })
    })
}

/// Compiles VCL text. `name` is shown in messages; `dir` is where relative
/// includes are looked up first.
pub fn compile_source(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Compiled, Diagnostics> {
    on_big_stack(|| compile_here(name, text, dir, opts))
}

fn compile_here(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Compiled, Diagnostics> {
    let (program, warnings, sources) = check_with_sources(name, text, dir, opts)?;
    let (wasm, meta) = crate::codegen::generate(&program)
        .map_err(|e| Diagnostic::new(format!("Code generation failed: {e}"), None))?;
    Ok(Compiled {
        wasm,
        meta,
        warnings,
        sources,
    })
}

/// Parses and checks VCL text into the typed program, without generating
/// code.
pub fn check_source(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<(tir::Program, Vec<Diagnostic>), Diagnostics> {
    on_big_stack(|| check_here(name, text, dir, opts))
}

fn check_here(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<(tir::Program, Vec<Diagnostic>), Diagnostics> {
    check_with_sources(name, text, dir, opts).map(|(p, w, _)| (p, w))
}

/// [`check_here`], also returning the sources read.
type Checked = (tir::Program, Vec<Diagnostic>, Vec<Arc<Source>>);

fn check_with_sources(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    opts: &CompileOptions,
) -> Result<Checked, Diagnostics> {
    let source = Arc::new(Source {
        name: name.to_string(),
        text: text.to_string(),
    });
    let mut loader = Loader::new(&opts.include_path, opts.allow_inline_c);
    loader.unsafe_path = opts.unsafe_path;
    let toks = loader.load(source.clone(), dir)?;
    let user = Parser::new(toks).program()?;

    let builtin_src = Arc::new(Source {
        name: "<builtin>".to_string(),
        text: BUILTIN_VCL.to_string(),
    });
    let btoks = crate::vcc_token::tokenize(&builtin_src, false)?;
    let builtin = Parser::new(btoks).traces_after(user.traces).program()?;

    let mut ck = Checker::new(user.version, opts.clone());
    // Varnish numbers its sources: the program 0, the builtin VCL 1, then
    // the included files in the order they were read.
    ck.trace_sources = [source.clone(), builtin_src.clone()]
        .into_iter()
        .chain(loader.sources.iter().skip(1).cloned())
        .collect();
    ck.builtin_subs = builtin
        .items
        .iter()
        .filter_map(|i| match i {
            ast::Item::Sub(s) => Some(s.name.name.clone()),
            _ => None,
        })
        .collect();
    ck.declare(&user.items, false)?;
    ck.declare(&builtin.items, true)?;
    ck.apply_default_probe();
    ck.check_all()?;
    ck.xref()?;
    if ck.meta.backends.is_empty() && ck.meta.objects.is_empty() {
        return Err(Diagnostic::new(
            "No backends or directors found in VCL program, at least one is necessary.",
            None,
        )
        .into());
    }
    let warnings = std::mem::take(&mut ck.warnings);
    Ok((ck.finish(), warnings, std::mem::take(&mut loader.sources)))
}

/// What a global name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SymKind {
    Backend(u32),
    Acl(u32),
    Probe(u32),
    Sub(SubId),
    Vmod,
    Object(ObjectId),
}

impl SymKind {
    fn kind_name(self) -> &'static str {
        match self {
            SymKind::Backend(_) => "backend",
            SymKind::Acl(_) => "acl",
            SymKind::Probe(_) => "probe",
            SymKind::Sub(_) => "sub",
            SymKind::Vmod => "vmod",
            SymKind::Object(_) => "instance",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Symbol {
    pub kind: SymKind,
    pub span: Span,
    pub refs: u32,
    /// Declared by the builtin VCL (never reported as unused).
    pub builtin: bool,
}

/// Something a subroutine does that is only legal in some methods: read,
/// set or unset a variable, return an action, call a restricted function.
#[derive(Clone, Debug)]
pub(crate) struct Use {
    pub allowed: MethodSet,
    pub span: Span,
    pub what: UseKind,
}

#[derive(Clone, Debug)]
pub(crate) enum UseKind {
    /// Reading a variable (or anything else only some methods may do).
    Read,
    /// `set` of a variable.
    Set,
    /// `unset` of a variable.
    Unset,
    /// A statement only some methods allow (`new`, `hash_data`, …).
    Action,
    /// `set` of a read-only variable, readable in these methods: "Variable
    /// is read only." where it is readable, "Not available …" elsewhere.
    SetReadOnly(MethodSet),
    Return(Action),
}

/// One subroutine being checked.
#[derive(Debug)]
pub(crate) struct SubState {
    pub name: String,
    pub method: Option<Method>,
    /// Where each definition's name is (the first is "the" definition).
    pub decl_spans: Vec<Span>,
    pub bodies: Vec<Vec<ast::Stmt>>,
    pub uses: Vec<Use>,
    pub calls: Vec<(SubId, Span)>,
    pub body: Vec<tir::Stmt>,
    pub builtin: bool,
}

/// An imported VMOD.
#[derive(Clone, Debug)]
pub(crate) struct VmodImport {
    pub vmod: Arc<vmods::Vmod>,
}

/// A `new` object.
#[derive(Clone, Debug)]
pub(crate) struct ObjectState {
    pub vmod: Arc<vmods::Vmod>,
    pub class: Arc<vmods::Object>,
}

/// The checker's state, shared by `vcc_expr`, `vcc_action`, `vcc_backend`,
/// `vcc_acl` and `vcc_xref`.
pub(crate) struct Checker {
    pub version: u32,
    pub opts: CompileOptions,
    pub symbols: HashMap<String, Symbol>,
    pub subs: Vec<SubState>,
    pub meta: Metadata,
    pub vmods: HashMap<String, VmodImport>,
    pub objects: Vec<ObjectState>,
    pub regex_ids: HashMap<String, u32>,
    pub warnings: Vec<Diagnostic>,
    /// References to undefined subs and ACLs: reported after unused
    /// declarations, as varnishd orders them.
    pub undefined: Vec<Diagnostic>,
    /// Names of the subs the builtin VCL defines: user VCL may define
    /// (extend) them although they start with `vcl_`.
    pub builtin_subs: Vec<String>,
    /// The sub whose body is being checked.
    pub cur: SubId,
    /// The sources by Varnish's numbering (for trace points).
    pub trace_sources: Vec<Arc<crate::error::Source>>,
}

pub(crate) type CResult<T> = Result<T, Diagnostic>;

pub(crate) fn err(msg: impl Into<String>, span: &Span) -> Diagnostic {
    Diagnostic::new(msg, Some(span.clone()))
}

impl Checker {
    fn new(version: u32, opts: CompileOptions) -> Self {
        Checker {
            version,
            opts,
            symbols: HashMap::new(),
            subs: Vec::new(),
            meta: Metadata {
                vcl_version: version,
                ..Metadata::default()
            },
            vmods: HashMap::new(),
            objects: Vec::new(),
            regex_ids: HashMap::new(),
            warnings: Vec::new(),
            undefined: Vec::new(),
            builtin_subs: Vec::new(),
            cur: 0,
            trace_sources: Vec::new(),
        }
    }

    /// Adds a global name, refusing clashes the way Varnish does.
    pub fn define(&mut self, name: &ast::Ident, kind: SymKind, builtin: bool) -> CResult<()> {
        if !matches!(kind, SymKind::Sub(_)) && name.name.starts_with("vcl_") {
            return Err(err("Symbols named 'vcl_*' are reserved.", &name.span));
        }
        if let Some(prev) = self.symbols.get(&name.name) {
            let same = std::mem::discriminant(&prev.kind) == std::mem::discriminant(&kind);
            let msg = match kind {
                SymKind::Backend(_) if same => format!("Backend '{}' redefined", name.name),
                SymKind::Probe(_) if same => format!("Probe '{}' redefined", name.name),
                SymKind::Acl(_) if same => format!("ACL '{}' redefined", name.name),
                SymKind::Object(_) if same => format!("Instance '{}' redefined.", name.name),
                _ => format!("Name '{}' already defined.", name.name),
            };
            let mut d = err(msg, &name.span);
            d.notes.push(format!(
                "First definition:\n{}",
                Diagnostic::new("", Some(prev.span.clone()))
                    .to_string()
                    .trim_start_matches('\n')
            ));
            return Err(d);
        }
        if name.name.contains('.') {
            let what = match kind {
                SymKind::Sub(_) => "subroutine",
                SymKind::Acl(_) => "ACL",
                SymKind::Backend(_) => "backend",
                SymKind::Probe(_) => "probe",
                SymKind::Object(_) => "object",
                SymKind::Vmod => "VMOD",
            };
            return Err(err(
                format!(
                    "Name of {}, '{}', contains illegal character '.'",
                    what, name.name
                ),
                &name.span,
            ));
        }
        if self.is_reserved(&name.name) {
            return Err(err(
                format!(
                    "Name {} must have type '{}'.",
                    name.name,
                    self.reserved_kind(&name.name)
                ),
                &name.span,
            ));
        }
        self.symbols.insert(
            name.name.clone(),
            Symbol {
                kind,
                span: name.span.clone(),
                refs: 0,
                builtin,
            },
        );
        Ok(())
    }

    fn is_reserved(&self, name: &str) -> bool {
        !self.reserved_kind(name).is_empty()
    }

    fn reserved_kind(&self, name: &str) -> &'static str {
        match name {
            "ban" | "call" | "hash_data" | "new" | "return" | "set" | "synthetic" | "unset"
            | "regsub" | "regsuball" => "action",
            "true" | "false" => "bool",
            _ if crate::vars::lookup(name, self.version).is_some() => "var",
            _ => "",
        }
    }

    /// Pass 1: every top-level declaration, so later references resolve
    /// regardless of order.
    fn declare(&mut self, items: &[ast::Item], builtin: bool) -> CResult<()> {
        for item in items {
            match item {
                ast::Item::Import(imp) => self.declare_import(imp)?,
                ast::Item::Backend(b) => self.declare_backend(b)?,
                ast::Item::Probe(p) => self.declare_probe(p)?,
                ast::Item::Acl(a) => self.declare_acl(a)?,
                ast::Item::Sub(s) => self.declare_sub(s, builtin)?,
            }
        }
        Ok(())
    }

    /// A probe named `default` probes every backend declared without a
    /// `.probe`, wherever it stands in the file (as varnishd does).
    fn apply_default_probe(&mut self) {
        let Some(SymKind::Probe(p)) = self.symbols.get("default").map(|s| s.kind) else {
            return;
        };
        let mut used = false;
        for b in &mut self.meta.backends {
            if b.probe.is_none() && !b.none {
                b.probe = Some(p);
                used = true;
            }
        }
        if used {
            self.reference("default");
        }
    }

    fn declare_import(&mut self, imp: &ast::Import) -> CResult<()> {
        let name = &imp.name.name;
        let local = imp.alias.as_ref().unwrap_or(&imp.name);
        if let Some((path, span)) = &imp.from {
            if !self.opts.unsafe_path && path.contains('/') {
                return Err(err("'import ... from path ...' is unsafe.", span));
            }
        }
        match self.symbols.get(&local.name).map(|s| s.kind) {
            Some(SymKind::Vmod) => {
                if self.vmods.get(&local.name).map(|v| v.vmod.name.as_str()) == Some(name) {
                    // Importing the same VMOD twice is harmless.
                    return Ok(());
                }
                return Err(err(
                    format!("Another module already imported as {}", local.name),
                    &local.span,
                ));
            }
            Some(other) => {
                return Err(err(
                    format!(
                        "Symbol '{}' has wrong type ({}), expected vmod:",
                        local.name,
                        other.describe()
                    ),
                    &local.span,
                ));
            }
            None => {}
        }
        let path = imp.from.as_ref().map(|(p, _)| p.as_str());
        let builtin =
            vmods::builtin_vmod(name).filter(|_| path.is_none_or(|p| !p.ends_with(".wasm")));
        let (vmod, native) = match (builtin, &self.opts.vmod_resolver) {
            (Some(v), _) => (Arc::new(v.clone()), true),
            (None, Some(r)) => match r.0.resolve(name, path) {
                Ok(v) => (Arc::new(v), false),
                Err(msg) => return Err(err(msg, &imp.name.span)),
            },
            (None, None) => {
                let what = match path {
                    Some(p) => format!("Could not find VMOD {} in \"{}\"", name, p),
                    None => format!("Could not find VMOD {}", name),
                };
                return Err(err(what, &imp.name.span));
            }
        };
        self.define(local, SymKind::Vmod, false)?;
        self.vmods.insert(local.name.clone(), VmodImport { vmod });
        self.meta.imports.push(tir::ImportDef {
            name: name.clone(),
            path: path.map(str::to_string),
            native,
        });
        Ok(())
    }

    fn declare_sub(&mut self, s: &ast::SubDecl, builtin: bool) -> CResult<()> {
        let name = &s.name.name;
        let method = Method::from_sub_name(name);
        if let Some(SymKind::Sub(id)) = self.symbols.get(name).map(|s| s.kind) {
            let st = &mut self.subs[id as usize];
            // Methods may be defined several times (bodies are joined); so
            // may any sub the builtin VCL defines, which the user extends.
            if st.method.is_some() || builtin || st.builtin {
                st.decl_spans.push(s.name.span.clone());
                st.bodies.push(s.body.clone());
                return Ok(());
            }
            let mut d = err(format!("Subroutine '{}' redefined", name), &s.name.span);
            d.notes.push("Previously defined here:".into());
            return Err(d);
        }
        if method.is_none()
            && name.starts_with("vcl_")
            && !builtin
            && !self.builtin_subs.contains(name)
        {
            let mut d = err(
                "The names 'vcl_*' are reserved for subroutines.",
                &s.name.span,
            );
            d.notes.push("Valid vcl_* subroutines are:".into());
            for m in Method::ALL {
                d.notes.push(format!("\t{}", m.sub_name()));
            }
            return Err(d);
        }
        let id = self.subs.len() as SubId;
        self.define(&s.name, SymKind::Sub(id), builtin)?;
        self.subs.push(SubState {
            name: name.clone(),
            method,
            decl_spans: vec![s.name.span.clone()],
            bodies: vec![s.body.clone()],
            uses: Vec::new(),
            calls: Vec::new(),
            body: Vec::new(),
            builtin,
        });
        Ok(())
    }

    /// Pass 2: check every subroutine body in definition order.
    fn check_all(&mut self) -> CResult<()> {
        self.declare_objects()?;
        for id in 0..self.subs.len() {
            self.cur = id as SubId;
            let bodies = std::mem::take(&mut self.subs[id].bodies);
            let mut out = Vec::new();
            for body in &bodies {
                self.check_block(body, &mut out)?;
            }
            self.subs[id].bodies = bodies;
            self.subs[id].body = out;
        }
        Ok(())
    }

    /// `new` statements may appear in any sub called from `vcl_init`; the
    /// objects they create are global names, so declare them first.
    fn declare_objects(&mut self) -> CResult<()> {
        let mut news = Vec::new();
        for s in &self.subs {
            for body in &s.bodies {
                collect_news(body, &mut news);
            }
        }
        for (name, ctor) in news {
            let Some((vmod_name, class_name)) = ctor.name.split_once('.') else {
                return Err(err(
                    format!("Symbol not found: '{}'", ctor.name),
                    &ctor.span,
                ));
            };
            let Some(imp) = self.vmods.get(vmod_name) else {
                return Err(err(
                    format!("Symbol not found: '{}'", ctor.name),
                    &ctor.span,
                ));
            };
            let vmod = imp.vmod.clone();
            let Some(class) = vmod.objects.iter().find(|o| o.name == class_name).cloned() else {
                return Err(err(
                    format!("Symbol not found: '{}'", ctor.name),
                    &ctor.span,
                ));
            };
            let id = self.objects.len() as ObjectId;
            self.define(&name, SymKind::Object(id), false)?;
            self.objects.push(ObjectState {
                vmod,
                class: Arc::new(class),
            });
            self.meta.objects.push(tir::ObjectDef {
                name: name.name.clone(),
                vmod: vmod_name.to_string(),
                class: class_name.to_string(),
            });
        }
        Ok(())
    }

    /// Marks a global as referenced.
    pub fn reference(&mut self, name: &str) {
        if let Some(s) = self.symbols.get_mut(name) {
            s.refs += 1;
        }
    }

    /// Records a method-dependent use in the current sub.
    pub fn record_use(&mut self, allowed: MethodSet, span: &Span, what: UseKind) {
        self.subs[self.cur as usize].uses.push(Use {
            allowed,
            span: span.clone(),
            what,
        });
    }

    /// Interns a regex, compiling it now so a bad one is a compile error.
    pub fn regex(&mut self, pattern: &str, span: &Span) -> CResult<u32> {
        if let Some(id) = self.regex_ids.get(pattern) {
            return Ok(*id);
        }
        if let Err(e) = pcre2::bytes::RegexBuilder::new().build(pattern) {
            return Err(err(format!("Regexp compilation error:\n\n{}\n", e), span));
        }
        let id = self.meta.regexes.len() as u32;
        self.meta.regexes.push(pattern.to_string());
        self.regex_ids.insert(pattern.to_string(), id);
        Ok(id)
    }

    /// Builds the typed program.
    fn finish(self) -> tir::Program {
        let subs = self
            .subs
            .into_iter()
            .map(|s| tir::Sub {
                name: s.name,
                method: s.method,
                body: s.body,
            })
            .collect();
        tir::Program {
            subs,
            meta: self.meta,
        }
    }
}

fn collect_news(body: &[ast::Stmt], out: &mut Vec<(ast::Ident, ast::Ident)>) {
    for s in body {
        match s {
            ast::Stmt::New { name, ctor, .. } => out.push((name.clone(), ctor.clone())),
            ast::Stmt::Block(b) => collect_news(b, out),
            ast::Stmt::If { then, els, .. } => {
                collect_news(then, out);
                if let Some(e) = els {
                    collect_news(e, out);
                }
            }
            _ => {}
        }
    }
}

impl SymKind {
    /// For messages: "backend", "acl", …
    pub fn describe(self) -> &'static str {
        self.kind_name()
    }
}
