//! The loaded VCLs (Varnish's `mgt_vcl`): programs and labels in load
//! order, which one is active, each program's state (`auto`, `cold`,
//! `warm`) and temperature, and the `vcl.*` commands of the admin CLI
//! with varnishd 7.1's answers.
//!
//! A request asks the table for a [`Route`] once, when it starts (or when
//! `return (vcl(label))` switches), and keeps the VCL it got until it is
//! done: `vcl.use` swaps the active route atomically under the table's
//! lock, and requests in flight finish on the VCL they began with.

use crate::cache_tenant::{Tenant, Tenants};
use crate::cache_vcl::Vcl;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// CLI status codes (Varnish's `CLIS_*`) the `vcl.*` commands answer.
pub const OK: u16 = 200;
pub const TOOFEW: u16 = 104;
pub const TOOMANY: u16 = 105;
pub const PARAM: u16 = 106;
pub const CANT: u16 = 300;

/// An answer: status and text.
pub type Answer = (u16, String);

fn ok(s: impl Into<String>) -> Answer {
    (OK, s.into())
}

/// A program's state as the admin set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Warm while used; cools `vcl_cooldown` after it stopped being used.
    Auto,
    Cold,
    Warm,
}

impl State {
    /// `auto`, `cold` or `warm`.
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "auto" => Some(State::Auto),
            "cold" => Some(State::Cold),
            "warm" => Some(State::Warm),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::Auto => "auto",
            State::Cold => "cold",
            State::Warm => "warm",
        }
    }
}

/// Where a request runs: the VCL, the name it was reached by, and the
/// tenant whose cache, bans and shared state it uses.
#[derive(Clone)]
pub struct Route {
    pub vcl: Arc<Vcl>,
    /// The label the VCL was reached through (`VCL_use`'s "via").
    pub label: Option<Arc<str>>,
    pub tenant: Arc<Tenant>,
}

struct Program {
    vcl: Arc<Vcl>,
    state: State,
    /// When it stopped being used (an `auto` program cools
    /// `vcl_cooldown` later).
    go_cold: Option<f64>,
}

enum Kind {
    Program(Program),
    Label { target: String },
}

struct Entry {
    name: String,
    kind: Kind,
}

struct Inner {
    /// In load order (`vcl.list`'s).
    entries: Vec<Entry>,
    active: Option<String>,
    /// Every name resolved, rebuilt after each change.
    routes: HashMap<String, Route>,
    active_route: Option<Route>,
}

/// The VCL table.
pub struct VclTable {
    inner: RwLock<Inner>,
    /// The tenants: the default one (requests not routed through a
    /// label) and the labels'.
    pub tenants: Arc<Tenants>,
}

/// Varnish's VCL name rule: a letter, then letters, digits, `_` and `-`.
/// The refusal to send, if `name` breaks it.
pub fn invalid_name(name: &str) -> Option<Answer> {
    let bad = name.char_indices().find(|&(i, c)| {
        !(c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_digit() || c == '_' || c == '-')))
    });
    let (_, c) = bad?;
    let shown = if (c as u32) > 0x20 && (c as u32) < 0x7f {
        format!("('{c}')")
    } else {
        let mut b = [0u8; 4];
        format!("(0x{:02x})", c.encode_utf8(&mut b).as_bytes()[0])
    };
    Some((PARAM, format!("Illegal character in VCL name {shown}")))
}

fn json_str(s: &str) -> String {
    crate::vmod_directors::json_str(s)
}

fn cold_refusal(name: &str) -> Answer {
    (
        CANT,
        format!("VCL '{name}' is cold - set to auto or warm first"),
    )
}

impl Inner {
    fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn program(&self, name: &str) -> Option<&Program> {
        match &self.find(name)?.kind {
            Kind::Program(p) => Some(p),
            Kind::Label { .. } => None,
        }
    }

    fn program_mut(&mut self, name: &str) -> Option<&mut Program> {
        self.entries
            .iter_mut()
            .find(|e| e.name == name)
            .and_then(|e| match &mut e.kind {
                Kind::Program(p) => Some(p),
                Kind::Label { .. } => None,
            })
    }

    fn is_label(&self, name: &str) -> bool {
        matches!(self.find(name).map(|e| &e.kind), Some(Kind::Label { .. }))
    }

    /// The labels naming program `name`.
    fn labels_of(&self, name: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| matches!(&e.kind, Kind::Label { target, .. } if target == name))
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The programs whose `return (vcl(label))` names `label`.
    fn users_of(&self, label: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| match &e.kind {
                Kind::Program(p) => p.vcl.shared.meta.labels.iter().any(|l| l == label),
                Kind::Label { .. } => false,
            })
            .map(|e| e.name.as_str())
            .collect()
    }

    /// The program a name resolves to (itself, or a label's target).
    fn target<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        match &self.find(name)?.kind {
            Kind::Program(_) => Some(name),
            Kind::Label { target, .. } => Some(target),
        }
    }

    /// Whether program `name` is in use: active (directly or through a
    /// label) or named by a label.
    fn in_use(&self, name: &str) -> bool {
        let active = self.active.as_deref().and_then(|a| self.target(a));
        active == Some(name) || !self.labels_of(name).is_empty()
    }

    /// Resolves every name again; a label declared a tenant routes the
    /// requests it gets from `return (vcl(label))` into that tenant, any
    /// other into the default tenant (Varnish's one cache).
    fn rebuild(&mut self, tenants: &Tenants) {
        let default = tenants.default_tenant();
        let mut routes = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let r = match &e.kind {
                Kind::Program(p) => Route {
                    vcl: p.vcl.clone(),
                    label: None,
                    tenant: default.clone(),
                },
                Kind::Label { target } => match self.program(target) {
                    Some(p) => Route {
                        vcl: p.vcl.clone(),
                        label: Some(Arc::from(e.name.as_str())),
                        tenant: tenants.get(&e.name).unwrap_or_else(|| default.clone()),
                    },
                    None => continue,
                },
            };
            routes.insert(e.name.clone(), r);
        }
        // The active VCL (a label too) serves the default tenant: only
        // `return (vcl(label))` enters a label's tenant.
        self.active_route = self.active.as_ref().and_then(|a| {
            routes.get(a).map(|r| Route {
                tenant: default.clone(),
                ..r.clone()
            })
        });
        self.routes = routes;
    }

    /// Warms program `name` (for use as active VCL or label target).
    fn warm(&mut self, name: &str) {
        if let Some(p) = self.program_mut(name) {
            p.go_cold = None;
            p.vcl.set_cold(false);
        }
    }

    /// Program `name` is no longer used: an `auto` one starts to cool.
    fn release(&mut self, name: &str, now: f64) {
        if self.in_use(name) {
            return;
        }
        if let Some(p) = self.program_mut(name) {
            if p.state == State::Auto {
                p.go_cold = Some(now);
            }
        }
    }
}

/// One line of `vcl.list`, for other admin views.
pub struct Listing {
    pub name: String,
    pub active: bool,
    pub label_of: Option<String>,
}

impl VclTable {
    /// An empty table over `tenants`.
    pub fn new(tenants: Arc<Tenants>) -> VclTable {
        VclTable {
            inner: RwLock::new(Inner {
                entries: Vec::new(),
                active: None,
                routes: HashMap::new(),
                active_route: None,
            }),
            tenants,
        }
    }

    /// Routes again after tenants were declared or removed.
    pub fn refresh(&self) {
        let mut g = self.write();
        g.rebuild(&self.tenants);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The active route (none before a VCL is loaded).
    pub fn active(&self) -> Option<Route> {
        self.read().active_route.clone()
    }

    /// The route of a name (a program or a label).
    pub fn route(&self, name: &str) -> Option<Route> {
        self.read().routes.get(name).cloned()
    }

    /// The active name ("" before the first load).
    pub fn active_name(&self) -> String {
        self.read().active.clone().unwrap_or_default()
    }

    /// Whether a name (program or label) is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.read().find(name).is_some()
    }

    /// Whether any program is loaded.
    pub fn has_programs(&self) -> bool {
        self.read()
            .entries
            .iter()
            .any(|e| matches!(e.kind, Kind::Program(_)))
    }

    /// The labels defined (for compiling `return (vcl(label))`).
    pub fn label_names(&self) -> Vec<String> {
        self.read()
            .entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::Label { .. }))
            .map(|e| e.name.clone())
            .collect()
    }

    /// Every program (not labels) with its name, in load order.
    pub fn programs(&self) -> Vec<(String, Arc<Vcl>)> {
        self.read()
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Program(p) => Some((e.name.clone(), p.vcl.clone())),
                Kind::Label { .. } => None,
            })
            .collect()
    }

    /// Names, whether active, and a label's target, in load order.
    pub fn listing(&self) -> Vec<Listing> {
        let g = self.read();
        g.entries
            .iter()
            .map(|e| Listing {
                name: e.name.clone(),
                active: g.active.as_deref() == Some(e.name.as_str()),
                label_of: match &e.kind {
                    Kind::Label { target, .. } => Some(target.clone()),
                    Kind::Program(_) => None,
                },
            })
            .collect()
    }

    /// Adds a loaded program (the caller checked the name). The first one
    /// that is not cold becomes the active VCL, as in varnishd.
    pub fn add(&self, name: &str, vcl: Arc<Vcl>, state: State) -> Result<(), Answer> {
        let now = crate::vrt_ctx::now();
        let mut g = self.write();
        if g.find(name).is_some() {
            return Err((PARAM, format!("Already a VCL named {name}")));
        }
        vcl.set_name(name);
        if state == State::Cold {
            vcl.set_cold(true);
        }
        // A VCL becomes active only by `vcl.use` (the boot VCL too, by
        // its caller), as in varnishd 7.1.
        let becomes_active = false;
        g.entries.push(Entry {
            name: name.to_string(),
            kind: Kind::Program(Program {
                vcl,
                state,
                go_cold: (state == State::Auto && !becomes_active).then_some(now),
            }),
        });
        if becomes_active {
            g.active = Some(name.to_string());
        }
        g.rebuild(&self.tenants);
        Ok(())
    }

    /// `vcl.use NAME`.
    pub fn use_(&self, name: &str) -> Answer {
        if let Some(e) = invalid_name(name) {
            return e;
        }
        let now = crate::vrt_ctx::now();
        let mut g = self.write();
        let Some(target) = g.target(name).map(str::to_string) else {
            return (PARAM, format!("No VCL named {name} known\n"));
        };
        if g.active.as_deref() == Some(name) {
            return ok("");
        }
        if g.program(&target).is_some_and(|p| p.state == State::Cold) {
            return cold_refusal(name);
        }
        g.warm(&target);
        let old = g.active.replace(name.to_string());
        if let Some(old) = old.as_deref().and_then(|o| g.target(o)).map(str::to_string) {
            g.release(&old, now);
        }
        g.rebuild(&self.tenants);
        ok(format!("VCL '{name}' now active"))
    }

    /// `vcl.label LABEL VCL` as varnishd checks it: a label only names a
    /// program (not another label), an existing name must be a label,
    /// the program must not be cold, and no chain of labels and
    /// `return (vcl(...))` may lead back to the label.
    pub fn label(&self, label: &str, target: &str) -> Answer {
        if let Some(e) = invalid_name(label) {
            return e;
        }
        let now = crate::vrt_ctx::now();
        let mut g = self.write();
        if g.find(label).is_some() && !g.is_label(label) {
            return (PARAM, format!("{label} is not a label"));
        }
        if let Some(e) = invalid_name(target) {
            return e;
        }
        match g.find(target) {
            None => return (PARAM, format!("No VCL named {target} known\n")),
            Some(e) if matches!(e.kind, Kind::Label { .. }) => {
                return (CANT, "VCL labels cannot point to labels".into())
            }
            Some(_) => {}
        }
        if g.program(target).is_some_and(|p| p.state == State::Cold) {
            return cold_refusal(target);
        }
        if let Some(path) = loop_path(&g, label, target) {
            let mut msg = path.join("\n");
            msg.push_str(&format!(
                "\nPointing label {label} at {target} would create a loop"
            ));
            return (PARAM, msg);
        }
        g.warm(target);
        let old = g
            .entries
            .iter_mut()
            .find(|e| e.name == label)
            .and_then(|e| match &mut e.kind {
                Kind::Label { target: t, .. } => Some(std::mem::replace(t, target.to_string())),
                Kind::Program(_) => None,
            });
        match old {
            Some(old) => {
                if old != target {
                    g.release(&old, now);
                }
            }
            None => g.entries.push(Entry {
                name: label.to_string(),
                kind: Kind::Label {
                    target: target.to_string(),
                },
            }),
        }
        g.rebuild(&self.tenants);
        ok("")
    }

    /// Each label's tenant and the program it names.
    pub fn tenant_labels(&self) -> Vec<(String, String)> {
        self.read()
            .routes
            .iter()
            .filter(|(_, r)| r.label.is_some())
            .map(|(_, r)| (r.tenant.name.clone(), r.vcl.name().to_string()))
            .collect()
    }

    /// `vcl.state NAME auto|cold|warm`.
    pub fn state(&self, name: &str, state: &str) -> Answer {
        if let Some(e) = invalid_name(name) {
            return e;
        }
        let now = crate::vrt_ctx::now();
        let mut g = self.write();
        if g.find(name).is_none() {
            return (PARAM, format!("No VCL named {name} known\n"));
        }
        if g.is_label(name) {
            return (PARAM, "Labels are always warm".into());
        }
        let Some(st) = State::parse(state) else {
            return (PARAM, "State must be one of auto, cold or warm.".into());
        };
        let active = g.active.as_deref().and_then(|a| g.target(a)) == Some(name);
        let labelled = !g.labels_of(name).is_empty();
        if g.program(name).is_some_and(|p| p.state == st) {
            return ok("");
        }
        match st {
            State::Cold if labelled => return (CANT, "A labeled VCL cannot be set cold".into()),
            State::Cold if active => return (CANT, "Cannot set the active VCL cold.".into()),
            _ => {}
        }
        if let Some(p) = g.program_mut(name) {
            p.state = st;
            match st {
                State::Cold => {
                    p.go_cold = None;
                    p.vcl.set_cold(true);
                }
                State::Warm => {
                    p.go_cold = None;
                    p.vcl.set_cold(false);
                }
                State::Auto => {
                    // Stays as warm as it is; cools if it is not used.
                    p.go_cold = (!active && !labelled).then_some(now);
                }
            }
        }
        ok("")
    }

    /// `vcl.discard GLOB...` as Varnish 7.1: every VCL or label a glob
    /// names goes, unless one is active, a glob names none, a label not
    /// discarded still names a program that is, or a program not
    /// discarded still returns to a label that is. All or nothing.
    pub fn discard(&self, globs: &[String], ws: u32) -> Answer {
        let mut g = self.write();
        let mut marked: Vec<String> = Vec::new();
        for glob in globs {
            let mut n = 0;
            for e in g
                .entries
                .iter()
                .filter(|e| crate::vmod_std::fnmatch(glob, &e.name, false))
            {
                if g.active.as_deref() == Some(e.name.as_str()) {
                    return (
                        CANT,
                        format!("Cannot discard active VCL program {}\n", e.name),
                    );
                }
                if !marked.contains(&e.name) {
                    marked.push(e.name.clone());
                }
                n += 1;
            }
            if n == 0 {
                return (PARAM, format!("No VCL name matches {glob}\n"));
            }
        }
        for m in &marked {
            if g.is_label(m) {
                let users: Vec<&str> = g
                    .users_of(m)
                    .into_iter()
                    .filter(|u| !marked.iter().any(|x| x == u))
                    .collect();
                if !users.is_empty() {
                    let mut msg =
                        format!("Cannot discard VCL label {m}, other VCLs depend on it:\n");
                    for u in users {
                        msg.push_str(&format!("\t{u}\n"));
                    }
                    return (CANT, msg);
                }
            } else {
                let deps: Vec<&str> = g
                    .labels_of(m)
                    .into_iter()
                    .filter(|l| !marked.iter().any(|x| x == l))
                    .collect();
                if !deps.is_empty() {
                    let mut msg = format!("Cannot discard labeled VCL program {m}:\n");
                    for d in deps {
                        msg.push_str(&format!("\t{d}\n"));
                    }
                    return (CANT, msg);
                }
            }
        }
        let now = crate::vrt_ctx::now();
        let released: Vec<String> = marked
            .iter()
            .filter_map(|m| match &g.find(m)?.kind {
                Kind::Label { target, .. } => Some(target.clone()),
                Kind::Program(_) => None,
            })
            .collect();
        g.entries.retain(|e| {
            let gone = marked.contains(&e.name);
            if gone {
                if let Kind::Program(p) = &e.kind {
                    // `vcl_fini` runs as it goes, with a client workspace
                    // (a label is only another name: discarding one runs
                    // nothing).
                    p.vcl.fini(ws);
                    // Its instances and probes go now; requests still on
                    // it finish on it.
                    p.vcl.set_cold(true);
                }
            }
            !gone
        });
        for t in released {
            g.release(&t, now);
        }
        for m in &marked {
            // A discarded label's tenant lets go of its objects (the
            // tenant and its quota stay, for a label of that name made
            // later).
            if g.routes.get(m).is_some_and(|r| r.label.is_some()) {
                self.tenants.clear(m);
            }
        }
        g.rebuild(&self.tenants);
        ok("")
    }

    /// Cools `auto` programs unused for `cooldown` seconds and without
    /// tasks (Varnish's VCL poker).
    pub fn poke(&self, now: f64, cooldown: f64) {
        let mut g = self.write();
        let cool: Vec<String> = g
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                Kind::Program(p)
                    if p.state == State::Auto
                        && !p.vcl.is_cold()
                        && p.go_cold.is_some_and(|t| t + cooldown < now)
                        && p.vcl.busy() == 0 =>
                {
                    Some(e.name.clone())
                }
                _ => None,
            })
            .collect();
        for n in cool {
            if g.in_use(&n) {
                continue;
            }
            if let Some(p) = g.program_mut(&n) {
                p.go_cold = None;
                p.vcl.set_cold(true);
            }
        }
    }

    /// `vcl.list [-j]`: `running` is whether the child runs (busy counts
    /// are shown only then, as varnishd).
    pub fn list(&self, args: &[String], running: bool) -> Answer {
        let json = match args {
            [] => false,
            [j] if j == "-j" => true,
            _ => return (TOOMANY, "Too many parameters\n".into()),
        };
        let g = self.read();
        let rows: Vec<Row> = g
            .entries
            .iter()
            .map(|e| {
                let active = g.active.as_deref() == Some(e.name.as_str());
                match &e.kind {
                    Kind::Program(p) => {
                        let busy = p.vcl.busy();
                        Row {
                            name: e.name.clone(),
                            active,
                            state: p.state.name(),
                            temperature: match (p.vcl.is_cold(), busy) {
                                (false, _) => "warm",
                                (true, 0) => "cold",
                                (true, _) => "busy",
                            },
                            busy,
                            labels: g.labels_of(&e.name).len(),
                            target: None,
                            refs: 0,
                        }
                    }
                    Kind::Label { target, .. } => Row {
                        name: e.name.clone(),
                        active,
                        state: "label",
                        temperature: "warm",
                        busy: 0,
                        labels: 0,
                        target: Some(target.clone()),
                        refs: g.users_of(&e.name).len(),
                    },
                }
            })
            .collect();
        drop(g);
        if json {
            return ok(list_json(args, &rows, running));
        }
        let mut raw = String::new();
        for r in &rows {
            let busy = if running {
                r.busy.to_string()
            } else {
                "-".to_string()
            };
            raw.push_str(&format!(
                "{}\t{}\t{}\t{busy:>6}\t{}",
                if r.active { "active" } else { "available" },
                r.state,
                r.temperature,
                r.name
            ));
            if let Some(t) = &r.target {
                raw.push_str(&format!("\t->\t{t}"));
                if r.refs > 0 {
                    raw.push_str(&format!(" ({} return(vcl))", r.refs));
                }
            } else if r.labels > 0 {
                raw.push_str(&format!(
                    "\t<-\t({} label{})",
                    r.labels,
                    if r.labels > 1 { "s" } else { "" }
                ));
            }
            raw.push('\n');
        }
        ok(crate::vte::vte(&raw, 80))
    }

    /// `vcl.show [-v] [NAME]`: the source of a program (of its target, for
    /// a label; of the active VCL without a name); `-v` every file it was
    /// compiled from and the builtin VCL, each after a `// VCL.SHOW`
    /// line giving its index, length and name.
    pub fn show(&self, args: &[String]) -> Answer {
        let (verbose, rest) = match args.first().map(String::as_str) {
            Some("-v") => (true, &args[1..]),
            _ => (false, args),
        };
        if args.len() > 2 {
            return (TOOMANY, "Too many parameters\n".into());
        }
        if rest.len() > 1 {
            return (PARAM, format!("Too many parameters: '{}'", rest[1]));
        }
        let g = self.read();
        let name = match rest.first() {
            Some(n) => n.clone(),
            None => match &g.active {
                Some(a) => a.clone(),
                None => return (PARAM, "No active VCL".into()),
            },
        };
        let Some(p) = g.target(&name).and_then(|t| g.program(t)) else {
            return (PARAM, format!("No VCL named '{name}'"));
        };
        let sources = &p.vcl.sources;
        if !verbose {
            return ok(sources.first().map(|s| s.text.clone()).unwrap_or_default());
        }
        let mut out = String::new();
        let builtin = vcl_to_wasm::BUILTIN_VCL;
        let all = sources
            .iter()
            .map(|s| (s.name.as_str(), s.text.as_str()))
            .chain(std::iter::once(("<builtin>", builtin)));
        for (i, (n, text)) in all.enumerate() {
            out.push_str(&format!("// VCL.SHOW {i} {} {n}\n{text}\n", text.len()));
        }
        ok(out)
    }

    /// `vcl.deps [-j]`: each VCL or label with what it depends on (a
    /// label on its program, a program on the labels it returns to).
    pub fn deps(&self, args: &[String]) -> Answer {
        let json = match args {
            [] => false,
            [j] if j == "-j" => true,
            _ => return (TOOMANY, "Too many parameters\n".into()),
        };
        let g = self.read();
        let deps: Vec<(String, Vec<String>)> = g
            .entries
            .iter()
            .map(|e| {
                let d = match &e.kind {
                    Kind::Label { target, .. } => vec![target.clone()],
                    Kind::Program(p) => p.vcl.shared.meta.labels.clone(),
                };
                (e.name.clone(), d)
            })
            .collect();
        if json {
            let argv: Vec<String> = std::iter::once("vcl.deps")
                .chain(args.iter().map(String::as_str))
                .map(json_str)
                .collect();
            let mut out = format!("[ 1, [{}], {:.3}", argv.join(", "), crate::vrt_ctx::now());
            for (n, d) in &deps {
                out.push_str(&format!(
                    ",\n  {{\n    \"name\": {},\n    \"deps\": [",
                    json_str(n)
                ));
                let items: Vec<String> = d
                    .iter()
                    .map(|x| format!("\n      {}", json_str(x)))
                    .collect();
                out.push_str(&items.join(","));
                out.push_str(if d.is_empty() {
                    "]\n  }"
                } else {
                    "\n    ]\n  }"
                });
            }
            out.push_str("\n]\n");
            return ok(out);
        }
        let mut raw = String::new();
        for (n, d) in &deps {
            if d.is_empty() {
                raw.push_str(&format!("{n}\n"));
            }
            for x in d {
                raw.push_str(&format!("{n}\t{x}\n"));
            }
        }
        ok(crate::vte::vte(&raw, 80))
    }
}

/// One row of `vcl.list`.
struct Row {
    name: String,
    active: bool,
    state: &'static str,
    temperature: &'static str,
    busy: usize,
    labels: usize,
    target: Option<String>,
    refs: usize,
}

/// `vcl.list -j` in varnishd 7.1's layout.
fn list_json(args: &[String], rows: &[Row], running: bool) -> String {
    let argv: Vec<String> = std::iter::once("vcl.list")
        .chain(args.iter().map(String::as_str))
        .map(json_str)
        .collect();
    let mut out = format!("[ 2, [{}], {:.3}", argv.join(", "), crate::vrt_ctx::now());
    for r in rows {
        out.push_str(&format!(
            ",\n  {{\n    \"status\": \"{}\",\n    \"state\": \"{}\",\n    \"temperature\": \"{}\",\n",
            if r.active { "active" } else { "available" },
            r.state,
            r.temperature
        ));
        if running {
            out.push_str(&format!("    \"busy\": {},\n", r.busy));
        }
        out.push_str(&format!("    \"name\": {}", json_str(&r.name)));
        if let Some(t) = &r.target {
            out.push_str(&format!(
                ",\n    \"label\": {{\n      \"name\": {}",
                json_str(t)
            ));
            if r.refs > 0 {
                out.push_str(&format!(",\n\"refs\": {}", r.refs));
            }
            // varnishd's manager (child stopped) and child indent this
            // differently.
            out.push_str(if running { "\n      }" } else { "\n    }" });
        } else if r.labels > 0 {
            out.push_str(&format!(",\n    \"labels\": {}", r.labels));
        }
        out.push_str("\n}");
    }
    out.push_str("\n]\n");
    out
}

/// A chain from `label` back to `target` through programs that return to
/// a label and labels that name a program, if pointing `label` at
/// `target` would close one: varnishd's explanation, one step a line.
fn loop_path(g: &Inner, label: &str, target: &str) -> Option<Vec<String>> {
    fn walk(g: &Inner, label: &str, target: &str, depth: usize) -> Option<Vec<String>> {
        if depth > g.entries.len() {
            return None;
        }
        for user in g.users_of(label) {
            let step = format!("Vcl {user} uses Label {label}");
            if user == target {
                return Some(vec![step]);
            }
            for l in g.labels_of(user) {
                if let Some(mut rest) = walk(g, l, target, depth + 1) {
                    let mut v = vec![step.clone(), format!("Label {l} points to vcl {user}")];
                    v.append(&mut rest);
                    return Some(v);
                }
            }
        }
        None
    }
    walk(g, label, target, 0)
}

/// Cools unused `auto` VCLs as time passes, until the context goes.
pub async fn poker(ctx: std::sync::Weak<crate::cache_req_fsm::Ctx>) {
    loop {
        let cooldown = match ctx.upgrade() {
            Some(c) => {
                let cooldown = c.params().num("vcl_cooldown");
                c.vcls.poke(crate::vrt_ctx::now(), cooldown);
                cooldown
            }
            None => return,
        };
        // Varnish looks at 0.45 of the cooldown; at least twice a second
        // here so short cooldowns in tests behave.
        let wait = (cooldown * 0.45).clamp(0.1, 0.5);
        tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
    }
}
