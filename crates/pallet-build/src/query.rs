//! `melange query`: Go `text/template` over a melange configuration, with melange's Go field
//! names (`{{ .Package.Name }}`, `{{ range .Subpackages }}{{ .Name }} {{ end }}`).
//!
//! The subset real recipes and Makefiles use: text; actions with `{{-`/`-}}` trimming and
//! `{{/* comments */}}`; field chains from `.`, `$` and `$variables` (struct fields by their Go
//! names, map keys as written); `if`/`else if`/`else`, `range` (lists and maps, with
//! `$i, $v :=`), `with`; pipelines with `|`; string, number and boolean constants; and the
//! functions `and or not eq ne lt le gt ge len index print printf println`. Anything else
//! (`define`, `template`, `block`, `break`, `continue`, `call`, `slice`, `html`, `js`,
//! `urlquery`) is refused with a message saying so. Values print as Go's `fmt` prints them
//! (`[a b]`, `map[k:v]`, zero values for absent fields); printing a whole struct is refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::compile::Configuration;

#[derive(Debug, thiserror::Error)]
#[error("template: query: {0}")]
pub struct QueryError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(m.into()))
}

// ---------------------------------------------------------------------------------------------
// melange's Go types: field name, YAML key, type.

#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Str,
    Int,
    Bool,
    Duration,
    List(Box<Ty>),
    Map(Box<Ty>),
    Struct(&'static str),
    Ptr(&'static str),
    /// A type pallet has no table for: fields are looked up by name in the data.
    Any,
}

fn ty(s: &'static str) -> Ty {
    if let Some(r) = s.strip_prefix("[]") {
        return Ty::List(Box::new(ty(r)));
    }
    if let Some(r) = s.strip_prefix("map[string]") {
        return Ty::Map(Box::new(ty(r)));
    }
    if let Some(r) = s.strip_prefix('*') {
        return Ty::Ptr(r);
    }
    match s {
        "string" => Ty::Str,
        "int" | "uint64" => Ty::Int,
        "bool" => Ty::Bool,
        "time.Duration" => Ty::Duration,
        "any" => Ty::Any,
        other => Ty::Struct(other),
    }
}

type Fields = &'static [(&'static str, &'static str, &'static str)];

fn schema(name: &str) -> Option<Fields> {
    Some(match name {
        "config.Configuration" => &[
            ("Package", "package", "config.Package"),
            ("Environment", "environment", "types.ImageConfiguration"),
            ("Capabilities", "capabilities", "config.Capabilities"),
            ("Pipeline", "pipeline", "[]config.Pipeline"),
            ("Subpackages", "subpackages", "[]config.Subpackage"),
            ("Data", "data", "[]config.RangeData"),
            ("Update", "update", "config.Update"),
            ("Vars", "vars", "map[string]string"),
            ("VarTransforms", "var-transforms", "[]config.VarTransforms"),
            ("Options", "options", "map[string]any"),
            ("Test", "test", "*config.Test"),
        ],
        "config.Package" => &[
            ("Name", "name", "string"),
            ("Version", "version", "string"),
            ("Epoch", "epoch", "uint64"),
            ("Description", "description", "string"),
            ("Annotations", "annotations", "map[string]string"),
            ("URL", "url", "string"),
            ("Commit", "commit", "string"),
            ("TargetArchitecture", "target-architecture", "[]string"),
            ("Copyright", "copyright", "[]config.Copyright"),
            ("Dependencies", "dependencies", "config.Dependencies"),
            ("Options", "options", "*config.PackageOption"),
            ("Scriptlets", "scriptlets", "*config.Scriptlets"),
            ("Checks", "checks", "config.Checks"),
            ("CPE", "cpe", "map[string]string"),
            ("SetCap", "setcap", "[]any"),
            ("Timeout", "timeout", "time.Duration"),
            ("Resources", "resources", "*config.Resources"),
            ("TestResources", "test-resources", "*config.Resources"),
        ],
        "config.Dependencies" => &[
            ("Runtime", "runtime", "[]string"),
            ("Provides", "provides", "[]string"),
            ("Replaces", "replaces", "[]string"),
            ("ProviderPriority", "provider-priority", "string"),
            ("ReplacesPriority", "replaces-priority", "string"),
        ],
        "config.PackageOption" => &[
            ("NoProvides", "no-provides", "bool"),
            ("NoDepends", "no-depends", "bool"),
            ("NoCommands", "no-commands", "bool"),
            ("NoVersionedShlibDeps", "no-versioned-shlib-deps", "bool"),
        ],
        "config.Scriptlets" => &[
            ("Trigger", "trigger", "config.Trigger"),
            ("PreInstall", "pre-install", "string"),
            ("PostInstall", "post-install", "string"),
            ("PreDeinstall", "pre-deinstall", "string"),
            ("PostDeinstall", "post-deinstall", "string"),
            ("PreUpgrade", "pre-upgrade", "string"),
            ("PostUpgrade", "post-upgrade", "string"),
        ],
        "config.Trigger" => &[
            ("Script", "script", "string"),
            ("Paths", "paths", "[]string"),
        ],
        "config.Checks" => &[
            ("Enabled", "enabled", "[]string"),
            ("Disabled", "disabled", "[]string"),
        ],
        "config.Copyright" => &[
            ("Paths", "paths", "[]string"),
            ("Attestation", "attestation", "string"),
            ("License", "license", "string"),
            ("LicensePath", "license-path", "string"),
            ("DetectionOverride", "detection-override", "string"),
        ],
        "config.Resources" => &[
            ("CPU", "cpu", "string"),
            ("CPUModel", "cpumodel", "string"),
            ("Memory", "memory", "string"),
            ("Disk", "disk", "string"),
        ],
        "config.Pipeline" => &[
            ("If", "if", "string"),
            ("Name", "name", "string"),
            ("Uses", "uses", "string"),
            ("With", "with", "map[string]string"),
            ("Runs", "runs", "string"),
            ("Pipeline", "pipeline", "[]config.Pipeline"),
            ("Inputs", "inputs", "map[string]any"),
            ("Needs", "needs", "*config.Needs"),
            ("Label", "label", "string"),
            ("Assertions", "assertions", "*any"),
            ("WorkDir", "working-directory", "string"),
            ("Environment", "environment", "map[string]string"),
        ],
        "config.Needs" => &[("Packages", "packages", "[]string")],
        "config.Subpackage" => &[
            ("If", "if", "string"),
            ("Range", "range", "string"),
            ("Name", "name", "string"),
            ("Pipeline", "pipeline", "[]config.Pipeline"),
            ("Dependencies", "dependencies", "config.Dependencies"),
            ("Options", "options", "*config.PackageOption"),
            ("Scriptlets", "scriptlets", "*config.Scriptlets"),
            ("Description", "description", "string"),
            ("Annotations", "annotations", "map[string]string"),
            ("URL", "url", "string"),
            ("Commit", "commit", "string"),
            ("Checks", "checks", "config.Checks"),
            ("Test", "test", "*config.Test"),
            ("SetCap", "setcap", "[]any"),
        ],
        "config.Test" => &[
            ("Environment", "environment", "types.ImageConfiguration"),
            ("Pipeline", "pipeline", "[]config.Pipeline"),
        ],
        "config.Capabilities" => &[("Add", "add", "[]string"), ("Drop", "drop", "[]string")],
        "config.VarTransforms" => &[
            ("From", "from", "string"),
            ("Match", "match", "string"),
            ("Replace", "replace", "string"),
            ("To", "to", "string"),
        ],
        "config.RangeData" => &[
            ("Name", "name", "string"),
            ("Items", "items", "map[string]string"),
        ],
        "config.Update" => &[
            ("Enabled", "enabled", "bool"),
            ("Manual", "manual", "bool"),
            ("RequireSequential", "require-sequential", "bool"),
            ("Shared", "shared", "bool"),
            ("VersionSeparator", "version-separator", "string"),
            ("IgnoreRegexPatterns", "ignore-regex-patterns", "[]string"),
            ("ReleaseMonitor", "release-monitor", "*any"),
            ("GitHubMonitor", "github", "*any"),
            ("GitMonitor", "git", "*any"),
            ("OCIMonitor", "oci", "*any"),
            ("VersionDataMonitor", "version_data", "*any"),
            ("VersionTransform", "version-transform", "[]any"),
            ("ExcludeReason", "exclude-reason", "string"),
            ("Schedule", "schedule", "*any"),
            ("EnablePreReleaseTags", "enable-prerelease-tags", "bool"),
        ],
        "types.ImageConfiguration" => &[
            ("Contents", "contents", "types.ImageContents"),
            ("Entrypoint", "entrypoint", "any"),
            ("Cmd", "cmd", "string"),
            ("StopSignal", "stop-signal", "string"),
            ("WorkDir", "work-dir", "string"),
            ("Accounts", "accounts", "any"),
            ("Archs", "archs", "[]string"),
            ("Environment", "environment", "map[string]string"),
            ("Paths", "paths", "[]any"),
            ("VCSUrl", "vcs-url", "string"),
            ("Annotations", "annotations", "map[string]string"),
            ("Include", "include", "string"),
            ("Volumes", "volumes", "[]string"),
        ],
        "types.ImageContents" => &[
            ("BuildRepositories", "build_repositories", "[]string"),
            ("RuntimeRepositories", "runtime_repositories", "[]string"),
            ("Repositories", "repositories", "[]string"),
            ("Keyring", "keyring", "[]string"),
            ("Packages", "packages", "[]string"),
            ("BaseImage", "baseimage", "*any"),
        ],
        _ => return None,
    })
}

/// A value with its Go type; `Null` is an absent field (the type's zero value).
#[derive(Clone, Debug)]
struct Val {
    v: Value,
    ty: Ty,
}

impl Val {
    fn lit(v: Value) -> Val {
        let ty = match &v {
            Value::String(_) => Ty::Str,
            Value::Number(_) => Ty::Int,
            Value::Bool(_) => Ty::Bool,
            _ => Ty::Any,
        };
        Val { v, ty }
    }

    fn type_name(&self) -> String {
        match &self.ty {
            Ty::Str => "string".into(),
            Ty::Int => "int".into(),
            Ty::Bool => "bool".into(),
            Ty::Duration => "time.Duration".into(),
            Ty::List(_) => "slice".into(),
            Ty::Map(_) => "map".into(),
            Ty::Struct(n) => n.to_string(),
            Ty::Ptr(n) => format!("*{n}"),
            Ty::Any => "interface {}".into(),
        }
    }

    fn field(&self, name: &str) -> Result<Val, QueryError> {
        match &self.ty {
            Ty::Struct(s) | Ty::Ptr(s) => {
                if matches!(self.ty, Ty::Ptr(_)) && self.v.is_null() {
                    return err(format!("nil pointer evaluating *{s}.{name}"));
                }
                let Some(fields) = schema(s) else {
                    return self.any_field(name);
                };
                let Some((_, key, t)) = fields.iter().find(|(g, _, _)| *g == name) else {
                    return err(format!("can't evaluate field {name} in type {s}"));
                };
                Ok(Val {
                    v: self.v.get(*key).cloned().unwrap_or(Value::Null),
                    ty: ty(t),
                })
            }
            Ty::Map(elem) => Ok(Val {
                v: self.v.get(name).cloned().unwrap_or(Value::Null),
                ty: (**elem).clone(),
            }),
            Ty::Any => self.any_field(name),
            _ => err(format!(
                "can't evaluate field {name} in type {}",
                self.type_name()
            )),
        }
    }

    /// A field of a type pallet has no table for: the key spelled like the Go name (case and
    /// `-`/`_` ignored).
    fn any_field(&self, name: &str) -> Result<Val, QueryError> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| *c != '-' && *c != '_')
                .collect::<String>()
                .to_ascii_lowercase()
        };
        if let Value::Object(m) = &self.v {
            if let Some(v) = m.get(name) {
                return Ok(Val {
                    v: v.clone(),
                    ty: Ty::Any,
                });
            }
            if let Some((_, v)) = m.iter().find(|(k, _)| norm(k) == norm(name)) {
                return Ok(Val {
                    v: v.clone(),
                    ty: Ty::Any,
                });
            }
        }
        err(format!(
            "can't evaluate field {name}: pallet's query does not know this field of {} (or it is not set)",
            self.type_name()
        ))
    }

    fn truthy(&self) -> bool {
        match &self.v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
            Value::String(s) => {
                if self.ty == Ty::Duration {
                    duration_secs(s).is_some_and(|d| d != 0)
                } else {
                    !s.is_empty()
                }
            }
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => match self.ty {
                Ty::Map(_) => !o.is_empty(),
                _ => true,
            },
        }
    }

    fn elem_ty(&self) -> Ty {
        match &self.ty {
            Ty::List(t) | Ty::Map(t) => (**t).clone(),
            _ => Ty::Any,
        }
    }

    /// The text Go's `fmt.Sprint` gives.
    fn print(&self) -> Result<String, QueryError> {
        match (&self.v, &self.ty) {
            (Value::Null, Ty::Str) => Ok(String::new()),
            (Value::Null, Ty::Int) => Ok("0".into()),
            (Value::Null, Ty::Bool) => Ok("false".into()),
            (Value::Null, Ty::Duration) => Ok("0s".into()),
            (Value::Null, Ty::List(_)) => Ok("[]".into()),
            (Value::Null, Ty::Map(_)) => Ok("map[]".into()),
            (Value::Null, Ty::Ptr(_)) => Ok("<nil>".into()),
            (Value::Null, Ty::Any) => Ok("<no value>".into()),
            (_, Ty::Struct(s)) | (_, Ty::Ptr(s)) => err(format!(
                "printing a whole {s} is not supported by pallet's query: name one of its fields (e.g. .Name)"
            )),
            (Value::String(s), Ty::Duration) => Ok(duration_secs(s)
                .map(go_duration)
                .unwrap_or_else(|| s.clone())),
            (Value::String(s), _) => Ok(s.clone()),
            (Value::Number(n), _) => Ok(n.to_string()),
            (Value::Bool(b), _) => Ok(b.to_string()),
            (Value::Array(a), _) => {
                let t = self.elem_ty();
                let items: Result<Vec<String>, _> = a
                    .iter()
                    .map(|v| {
                        Val {
                            v: v.clone(),
                            ty: t.clone(),
                        }
                        .print()
                    })
                    .collect();
                Ok(format!("[{}]", items?.join(" ")))
            }
            (Value::Object(o), _) => {
                let t = self.elem_ty();
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                let mut parts = vec![];
                for k in keys {
                    let v = Val {
                        v: o[k].clone(),
                        ty: t.clone(),
                    }
                    .print()?;
                    parts.push(format!("{k}:{v}"));
                }
                Ok(format!("map[{}]", parts.join(" ")))
            }
        }
    }
}

/// Seconds of a melange timeout (`30m`, `1h30m`, `90s`, a bare number of seconds).
fn duration_secs(s: &str) -> Option<u64> {
    crate::policy::parse_timeout(s)
        .ok()
        .map(|d| d.map(|d| d.as_secs()).unwrap_or(0))
}

/// Go's `time.Duration.String` for whole seconds.
fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// `.A.B` (empty for `.`).
    Field(Vec<String>),
    /// `$name` followed by fields (`$` alone is the root).
    Var(String, Vec<String>),
    Str(String),
    Num(i64),
    Ident(String),
    Pipe,
    Open,
    Close,
    Declare,
    Assign,
    Comma,
}

#[derive(Clone, Debug)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    Nil,
    Sub(Pipeline, Vec<String>),
}

#[derive(Clone, Debug, Default)]
struct Pipeline {
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

const UNSUPPORTED: &[&str] = &[
    "define", "template", "block", "break", "continue", "call", "slice", "html", "js", "urlquery",
];

fn lex(src: &str) -> Result<Vec<Tok>, QueryError> {
    let b: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    let ident = |i: &mut usize| {
        let mut s = String::new();
        while *i < b.len() && (b[*i].is_alphanumeric() || b[*i] == '_') {
            s.push(b[*i]);
            *i += 1;
        }
        s
    };
    let fields = |i: &mut usize| {
        let mut f = vec![];
        while *i < b.len() && b[*i] == '.' {
            *i += 1;
            let mut s = String::new();
            while *i < b.len() && (b[*i].is_alphanumeric() || b[*i] == '_') {
                s.push(b[*i]);
                *i += 1;
            }
            if s.is_empty() {
                break;
            }
            f.push(s);
        }
        f
    };
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
                // A field of a parenthesised value: (index .X 0).Name
                if i < b.len() && b[i] == '.' && i + 1 < b.len() && b[i + 1].is_alphabetic() {
                    let f = fields(&mut i);
                    out.push(Tok::Field(f));
                    // Marked by position: a Field straight after Close applies to it.
                }
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' if b.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1
            }
            '.' => {
                let f = fields(&mut i);
                out.push(Tok::Field(f));
            }
            '$' => {
                i += 1;
                let name = ident(&mut i);
                let f = fields(&mut i);
                out.push(Tok::Var(name, f));
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = b.get(i) else {
                        return err("unterminated quoted string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = b.get(i).copied().unwrap_or('\\');
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            '`' => {
                i += 1;
                let mut s = String::new();
                while i < b.len() && b[i] != '`' {
                    s.push(b[i]);
                    i += 1;
                }
                if i >= b.len() {
                    return err("unterminated raw string");
                }
                i += 1;
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit()
                || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let mut s = String::from(c);
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    s.push(b[i]);
                    i += 1;
                }
                out.push(Tok::Num(
                    s.parse()
                        .map_err(|_| QueryError(format!("bad number {s}")))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let s = ident(&mut i);
                out.push(Tok::Ident(s));
            }
            other => return err(format!("unexpected {other:?} in action {{{{{src}}}}}")),
        }
    }
    Ok(out)
}

fn parse_pipeline(toks: &[Tok], src: &str) -> Result<Pipeline, QueryError> {
    let mut p = Pipeline::default();
    let mut i = 0;
    // `$x :=` or `$i, $v :=`
    let mut j = 0;
    let mut names = vec![];
    while let Some(Tok::Var(n, f)) = toks.get(j) {
        if !f.is_empty() {
            break;
        }
        names.push(n.clone());
        j += 1;
        match toks.get(j) {
            Some(Tok::Comma) => j += 1,
            Some(Tok::Declare) => {
                p.decl = names.clone();
                i = j + 1;
                break;
            }
            Some(Tok::Assign) => {
                return err(format!(
                    "assigning to a variable ({{{{{src}}}}}) is not supported by pallet's query"
                ));
            }
            _ => break,
        }
    }
    let (cmds, used) = parse_cmds(&toks[i..], src, false)?;
    if used != toks.len() - i {
        return err(format!("unexpected ')' in {{{{{src}}}}}"));
    }
    p.cmds = cmds;
    if p.cmds.is_empty() {
        return err(format!("missing value for command in {{{{{src}}}}}"));
    }
    Ok(p)
}

/// Commands separated by `|`, up to the end or (inside parentheses) a `)`.
fn parse_cmds(toks: &[Tok], src: &str, nested: bool) -> Result<(Vec<Vec<Arg>>, usize), QueryError> {
    let mut cmds = vec![];
    let mut cur = vec![];
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Pipe => {
                if cur.is_empty() {
                    return err(format!("missing command before '|' in {{{{{src}}}}}"));
                }
                cmds.push(std::mem::take(&mut cur));
            }
            Tok::Close => {
                if nested {
                    break;
                }
                return err(format!("unexpected ')' in {{{{{src}}}}}"));
            }
            Tok::Open => {
                let (inner, used) = parse_cmds(&toks[i + 1..], src, true)?;
                i += used + 1;
                if toks.get(i) != Some(&Tok::Close) {
                    return err(format!("unclosed '(' in {{{{{src}}}}}"));
                }
                let mut fields = vec![];
                if let Some(Tok::Field(f)) = toks.get(i + 1) {
                    fields = f.clone();
                    i += 1;
                }
                cur.push(Arg::Sub(
                    Pipeline {
                        decl: vec![],
                        cmds: inner,
                    },
                    fields,
                ));
            }
            Tok::Field(f) => cur.push(Arg::Field(f.clone())),
            Tok::Var(n, f) => cur.push(Arg::Var(n.clone(), f.clone())),
            Tok::Str(s) => cur.push(Arg::Lit(Value::String(s.clone()))),
            Tok::Num(n) => cur.push(Arg::Lit(Value::from(*n))),
            Tok::Ident(id) => match id.as_str() {
                "true" => cur.push(Arg::Lit(Value::Bool(true))),
                "false" => cur.push(Arg::Lit(Value::Bool(false))),
                "nil" => cur.push(Arg::Nil),
                f if UNSUPPORTED.contains(&f) => {
                    return err(format!(
                        "the function {f} is not supported by pallet's query (supported: and or not eq ne lt le gt ge len index print printf println)"
                    ));
                }
                "and" | "or" | "not" | "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "len"
                | "index" | "print" | "printf" | "println" => cur.push(Arg::Func(id.clone())),
                other => return err(format!("function \"{other}\" not defined")),
            },
            Tok::Comma | Tok::Declare | Tok::Assign => {
                return err(format!("unexpected token in {{{{{src}}}}}"));
            }
        }
        i += 1;
    }
    if !cur.is_empty() {
        cmds.push(cur);
    }
    Ok((cmds, i))
}

enum Item {
    Node(Node),
    Else(Option<Pipeline>),
    End,
    Open(&'static str, Pipeline),
}

fn split_actions(src: &str) -> Result<Vec<Item>, QueryError> {
    let mut items = vec![];
    let mut rest = src;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let t = if trim_next { rest.trim_start() } else { rest };
            if !t.is_empty() {
                items.push(Item::Node(Node::Text(t.to_string())));
            }
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_before =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_before {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Node(Node::Text(text.to_string())));
        }
        let body_start = if trim_before { 2 } else { 0 };
        let after = &after[body_start..];
        let close = find_close(after).ok_or_else(|| QueryError("unclosed action".into()))?;
        let mut body = &after[..close];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        rest = &after[close + 2..];
        let b = body.trim();
        if b.starts_with("/*") {
            if !b.ends_with("*/") {
                return err("unclosed comment");
            }
            continue;
        }
        let toks = lex(b)?;
        let kw = match toks.first() {
            Some(Tok::Ident(k)) => k.as_str(),
            _ => "",
        };
        match kw {
            "if" | "range" | "with" => {
                let k: &'static str = match kw {
                    "if" => "if",
                    "range" => "range",
                    _ => "with",
                };
                items.push(Item::Open(k, parse_pipeline(&toks[1..], b)?));
            }
            "else" => {
                if toks.len() == 1 {
                    items.push(Item::Else(None));
                } else if toks.get(1) == Some(&Tok::Ident("if".into())) {
                    items.push(Item::Else(Some(parse_pipeline(&toks[2..], b)?)));
                } else {
                    return err(format!(
                        "{{{{{b}}}}}: only 'else' and 'else if' are supported by pallet's query"
                    ));
                }
            }
            "end" => items.push(Item::End),
            k if ["define", "template", "block", "break", "continue"].contains(&k) => {
                return err(format!(
                    "{{{{{k}}}}} is not supported by pallet's query (supported: fields, if/else, range, with, pipelines and the functions and or not eq ne lt le gt ge len index print printf println)"
                ));
            }
            _ => items.push(Item::Node(Node::Print(parse_pipeline(&toks, b)?))),
        }
    }
    Ok(items)
}

/// The `}}` ending an action, outside quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut q: Option<u8> = None;
    while i < b.len() {
        match q {
            Some(c) => {
                if b[i] == b'\\' && c == b'"' {
                    i += 1;
                } else if b[i] == c {
                    q = None;
                }
            }
            None => {
                if b[i] == b'"' || b[i] == b'`' {
                    q = Some(b[i]);
                } else if b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Nest the flat items into a tree; returns the nodes and how the block ended.
fn nest(
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
    depth: usize,
) -> Result<(Vec<Node>, Option<Item>), QueryError> {
    let mut out = vec![];
    while let Some(it) = items.next() {
        match it {
            Item::Node(n) => out.push(n),
            Item::Open(k, p) => {
                let (body, ended) = nest(items, depth + 1)?;
                let mut els = vec![];
                // `else if` was rewritten as `else` + `if` by `parse`.
                if let Some(Item::Else(_)) = ended {
                    let (e, end2) = nest(items, depth + 1)?;
                    if !matches!(end2, Some(Item::End)) {
                        return err(format!("unexpected EOF in {k}"));
                    }
                    els = e;
                } else if !matches!(ended, Some(Item::End)) {
                    return err(format!("unexpected EOF in {k}"));
                }
                out.push(match k {
                    "if" => Node::If(p, body, els),
                    "range" => Node::Range(p, body, els),
                    _ => Node::With(p, body, els),
                });
            }
            e @ (Item::Else(_) | Item::End) => {
                if depth == 0 {
                    return err(format!(
                        "unexpected {{{{{}}}}}",
                        if matches!(e, Item::End) {
                            "end"
                        } else {
                            "else"
                        }
                    ));
                }
                return Ok((out, Some(e)));
            }
        }
    }
    Ok((out, None))
}

fn parse(src: &str) -> Result<Vec<Node>, QueryError> {
    let items = split_actions(src)?;
    // Rewrite `{{else if C}}` as `{{else}}{{if C}}` with one extra `{{end}}` at the block's
    // end, which is what text/template means by it.
    let mut flat: Vec<Item> = vec![];
    let mut extra_ends: Vec<usize> = vec![0];
    for it in items {
        match it {
            Item::Open(k, p) => {
                extra_ends.push(0);
                flat.push(Item::Open(k, p));
            }
            Item::Else(Some(c)) => {
                flat.push(Item::Else(None));
                flat.push(Item::Open("if", c));
                if let Some(n) = extra_ends.last_mut() {
                    *n += 1;
                }
            }
            Item::End => {
                let n = extra_ends.pop().unwrap_or(0);
                for _ in 0..=n {
                    flat.push(Item::End);
                }
                if extra_ends.is_empty() {
                    extra_ends.push(0);
                }
            }
            other => flat.push(other),
        }
    }
    let mut it = flat.into_iter().peekable();
    let (nodes, end) = nest(&mut it, 0)?;
    if end.is_some() {
        return err("unexpected {{end}}");
    }
    Ok(nodes)
}

// ---------------------------------------------------------------------------------------------
// Execution

struct Exec {
    root: Val,
    vars: Vec<(String, Val)>,
}

impl Exec {
    fn var(&self, name: &str) -> Result<Val, QueryError> {
        if name.is_empty() {
            return Ok(self.root.clone());
        }
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| QueryError(format!("undefined variable: ${name}")))
    }

    fn fields(mut v: Val, fields: &[String]) -> Result<Val, QueryError> {
        for f in fields {
            v = v.field(f)?;
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, QueryError> {
        match a {
            Arg::Field(f) => Self::fields(dot.clone(), f),
            Arg::Var(n, f) => Self::fields(self.var(n)?, f),
            Arg::Lit(v) => Ok(Val::lit(v.clone())),
            Arg::Nil => Ok(Val {
                v: Value::Null,
                ty: Ty::Any,
            }),
            Arg::Func(f) => self.call(f, &[], None, dot),
            Arg::Sub(p, f) => {
                let v = self.pipeline(p, dot)?;
                Self::fields(v, f)
            }
        }
    }

    fn command(&mut self, cmd: &[Arg], prev: Option<Val>, dot: &Val) -> Result<Val, QueryError> {
        match &cmd[0] {
            Arg::Func(f) => self.call(f, &cmd[1..], prev, dot),
            first => {
                if cmd.len() > 1 || prev.is_some() {
                    return err("can't give arguments to a non-function value");
                }
                self.arg(first, dot)
            }
        }
    }

    fn call(
        &mut self,
        f: &str,
        args: &[Arg],
        prev: Option<Val>,
        dot: &Val,
    ) -> Result<Val, QueryError> {
        // `and` and `or` stop at the first deciding value, as Go's do.
        if f == "and" || f == "or" {
            let mut last = None;
            let n = args.len() + usize::from(prev.is_some());
            if n == 0 {
                return err(format!(
                    "wrong number of args for {f}: want at least 1 got 0"
                ));
            }
            for a in args {
                let v = self.arg(a, dot)?;
                if (f == "and") != v.truthy() {
                    return Ok(v);
                }
                last = Some(v);
            }
            if let Some(p) = prev {
                return Ok(p);
            }
            return Ok(last.expect("an argument"));
        }
        let mut vals = vec![];
        for a in args {
            vals.push(self.arg(a, dot)?);
        }
        if let Some(p) = prev {
            vals.push(p);
        }
        let want = |n: usize| -> Result<(), QueryError> {
            if vals.len() != n {
                return err(format!(
                    "wrong number of args for {f}: want {n} got {}",
                    vals.len()
                ));
            }
            Ok(())
        };
        let b = |x: bool| Val::lit(Value::Bool(x));
        match f {
            "not" => {
                want(1)?;
                Ok(b(!vals[0].truthy()))
            }
            "len" => {
                want(1)?;
                let n = match &vals[0].v {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    Value::Null if matches!(vals[0].ty, Ty::List(_) | Ty::Map(_) | Ty::Str) => 0,
                    _ => return err(format!("len of type {}", vals[0].type_name())),
                };
                Ok(Val::lit(Value::from(n)))
            }
            "index" => {
                if vals.is_empty() {
                    return err("wrong number of args for index: want at least 1 got 0");
                }
                let mut v = vals[0].clone();
                for k in &vals[1..] {
                    let elem = v.elem_ty();
                    v = match (&v.v, &k.v) {
                        (Value::Array(a), Value::Number(n)) => {
                            let i = n.as_i64().unwrap_or(-1);
                            if i < 0 || i as usize >= a.len() {
                                return err(format!(
                                    "error calling index: index out of range: {i}"
                                ));
                            }
                            Val {
                                v: a[i as usize].clone(),
                                ty: elem,
                            }
                        }
                        (Value::Object(o), Value::String(s)) => Val {
                            v: o.get(s).cloned().unwrap_or(Value::Null),
                            ty: elem,
                        },
                        (Value::Null, Value::String(_)) if matches!(v.ty, Ty::Map(_)) => Val {
                            v: Value::Null,
                            ty: elem,
                        },
                        _ => {
                            return err(format!(
                                "error calling index: cannot index {} with {}",
                                v.type_name(),
                                k.type_name()
                            ));
                        }
                    };
                }
                Ok(v)
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if vals.len() < 2 {
                    return err(format!(
                        "wrong number of args for {f}: want 2 got {}",
                        vals.len()
                    ));
                }
                if f == "eq" {
                    let a = &vals[0];
                    for o in &vals[1..] {
                        if cmp(a, o)? == std::cmp::Ordering::Equal {
                            return Ok(b(true));
                        }
                    }
                    return Ok(b(false));
                }
                want(2)?;
                let o = cmp(&vals[0], &vals[1])?;
                use std::cmp::Ordering::*;
                Ok(b(match f {
                    "ne" => o != Equal,
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                }))
            }
            "print" | "println" => {
                let mut s = String::new();
                for (i, v) in vals.iter().enumerate() {
                    let is_str = |v: &Val| matches!(v.v, Value::String(_));
                    if i > 0 && (f == "println" || (!is_str(v) && !is_str(&vals[i - 1]))) {
                        s.push(' ');
                    }
                    s.push_str(&v.print()?);
                }
                if f == "println" {
                    s.push('\n');
                }
                Ok(Val::lit(Value::String(s)))
            }
            "printf" => {
                if vals.is_empty() {
                    return err("wrong number of args for printf: want at least 1 got 0");
                }
                let Value::String(fmt) = &vals[0].v else {
                    return err("printf: the format must be a string");
                };
                Ok(Val::lit(Value::String(printf(fmt, &vals[1..])?)))
            }
            other => err(format!("function \"{other}\" not defined")),
        }
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Val) -> Result<Val, QueryError> {
        let mut v: Option<Val> = None;
        for c in &p.cmds {
            v = Some(self.command(c, v, dot)?);
        }
        let v = v.expect("a command");
        if p.decl.len() == 1 {
            self.vars.push((p.decl[0].clone(), v.clone()));
        }
        Ok(v)
    }

    fn run(&mut self, nodes: &[Node], dot: &Val, out: &mut String) -> Result<(), QueryError> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        out.push_str(&v.print()?);
                    }
                }
                Node::If(p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    let r = if v.truthy() {
                        self.run(body, dot, out)
                    } else {
                        self.run(els, dot, out)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::With(p, body, els) => {
                    let mark = self.vars.len();
                    let v = self.pipeline(p, dot)?;
                    let r = if v.truthy() {
                        self.run(body, &v, out)
                    } else {
                        self.run(els, dot, out)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Range(p, body, els) => {
                    let decl = p.decl.clone();
                    let plain = Pipeline {
                        decl: vec![],
                        cmds: p.cmds.clone(),
                    };
                    let v = self.pipeline(&plain, dot)?;
                    let elem = v.elem_ty();
                    let pairs: Vec<(Val, Val)> = match &v.v {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| {
                                (
                                    Val::lit(Value::from(i)),
                                    Val {
                                        v: x.clone(),
                                        ty: elem.clone(),
                                    },
                                )
                            })
                            .collect(),
                        Value::Object(o) if !matches!(v.ty, Ty::Struct(_) | Ty::Ptr(_)) => {
                            let mut keys: Vec<&String> = o.keys().collect();
                            keys.sort();
                            keys.into_iter()
                                .map(|k| {
                                    (
                                        Val::lit(Value::String(k.clone())),
                                        Val {
                                            v: o[k].clone(),
                                            ty: elem.clone(),
                                        },
                                    )
                                })
                                .collect()
                        }
                        Value::Null => vec![],
                        _ => {
                            return err(format!(
                                "range can't iterate over {}",
                                v.print().unwrap_or_else(|_| v.type_name())
                            ));
                        }
                    };
                    if pairs.is_empty() {
                        self.run(els, dot, out)?;
                        continue;
                    }
                    for (k, x) in pairs {
                        let mark = self.vars.len();
                        match decl.len() {
                            0 => {}
                            1 => self.vars.push((decl[0].clone(), x.clone())),
                            _ => {
                                self.vars.push((decl[0].clone(), k));
                                self.vars.push((decl[1].clone(), x.clone()));
                            }
                        }
                        let r = self.run(body, &x, out);
                        self.vars.truncate(mark);
                        r?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn cmp(a: &Val, b: &Val) -> Result<std::cmp::Ordering, QueryError> {
    let num = |v: &Val| match &v.v {
        Value::Number(n) => n.as_f64(),
        Value::Null if v.ty == Ty::Int => Some(0.0),
        _ => None,
    };
    let text = |v: &Val| match &v.v {
        Value::String(s) => Some(s.clone()),
        Value::Null if v.ty == Ty::Str => Some(String::new()),
        _ => None,
    };
    let boolean = |v: &Val| match &v.v {
        Value::Bool(x) => Some(*x),
        Value::Null if v.ty == Ty::Bool => Some(false),
        _ => None,
    };
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal));
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return Ok(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (boolean(a), boolean(b)) {
        return Ok(x.cmp(&y));
    }
    err(format!(
        "error calling comparison: incompatible types for comparison ({} and {})",
        a.type_name(),
        b.type_name()
    ))
}

/// Go's `fmt.Sprintf` for `%s %v %d %q %t %%`.
fn printf(fmt: &str, args: &[Val]) -> Result<String, QueryError> {
    let mut out = String::new();
    let mut it = fmt.chars();
    let mut n = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.get(n) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        n += 1;
        match verb {
            's' | 'v' | 'd' | 't' => out.push_str(&a.print()?),
            'q' => out.push_str(&crate::yamledit::double_quoted(&a.print()?)),
            other => {
                return err(format!(
                    "printf: the verb %{other} is not supported by pallet's query (%s %v %d %q %t %%)"
                ));
            }
        }
    }
    if n < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Result<Vec<String>, _> = args[n..]
            .iter()
            .map(|a| Ok::<_, QueryError>(format!("{}={}", a.type_name(), a.print()?)))
            .collect();
        out.push_str(&extra?.join(", "));
        out.push(')');
    }
    Ok(out)
}

/// Replace the `${{name}}` references `map` knows, as Go's `strings.Replacer` of melange's
/// parse-time substitution does (anything else stays as written).
fn replace_known(text: &str, map: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        match after.find("}}") {
            Some(end) => {
                let token = &after[..end + 2];
                match map.get(token) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(token),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Fields melange's parse-time substitution leaves as written.
const NOT_REPLACED: &[&str] = &[
    "uses",
    "label",
    "inputs",
    "options",
    "checks",
    "cpe",
    "timeout",
    "resources",
    "test-resources",
    "setcap",
    "assertions",
    "accounts",
    "archs",
    "paths",
    "attestation",
    "detection-override",
    "vars",
    "var-transforms",
    "data",
];

fn replace_value(v: &mut Value, map: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => *s = replace_known(s, map),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_value(x, map)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if !NOT_REPLACED.contains(&k.as_str()) {
                    replace_value(x, map);
                }
            }
        }
        _ => {}
    }
}

/// The configuration as melange's `ParseConfiguration` hands it over: `${{package.name}}`,
/// `${{package.version}}`, `${{package.epoch}}`, `${{package.full-version}}`,
/// `${{package.description}}` and `${{vars.*}}` (after `var-transforms`) replaced in the
/// package, pipelines, subpackages, environment, test and update, and subpackages with a
/// `range` expanded over their data items (sorted, `${{range.key}}`/`${{range.value}}`).
fn parse_time_view(cfg: &Configuration, path: &Path) -> Result<Value, QueryError> {
    let vars = crate::compile::variables(cfg, path, &Default::default())
        .map_err(|e| QueryError(e.to_string()))?;
    let mut map: BTreeMap<String, String> = vars
        .iter()
        .filter(|(k, _)| {
            k.starts_with("vars.")
                || [
                    "package.name",
                    "package.version",
                    "package.epoch",
                    "package.full-version",
                    "package.description",
                ]
                .contains(&k.as_str())
        })
        .map(|(k, v)| (format!("${{{{{k}}}}}"), v.clone()))
        .collect();
    let mut v = serde_json::to_value(cfg).map_err(|e| QueryError(e.to_string()))?;
    let subs = v
        .get_mut("subpackages")
        .and_then(|s| s.as_array_mut())
        .map(std::mem::take)
        .unwrap_or_default();
    replace_value(&mut v, &map);
    let mut expanded = vec![];
    for mut sp in subs {
        let range = sp.get("range").and_then(|r| r.as_str()).map(str::to_string);
        match range.filter(|r| !r.is_empty()) {
            None => {
                replace_value(&mut sp, &map);
                expanded.push(sp);
            }
            Some(r) => {
                let data = cfg.data.iter().find(|d| d.name == r).ok_or_else(|| {
                    QueryError(format!(
                        "subpackage {} specified undefined range: {r:?}",
                        sp["name"]
                    ))
                })?;
                if let Some(o) = sp.as_object_mut() {
                    o.remove("range");
                }
                for (k, val) in &data.items {
                    map.insert("${{range.key}}".into(), k.clone());
                    map.insert("${{range.value}}".into(), val.clone().unwrap_or_default());
                    let mut one = sp.clone();
                    replace_value(&mut one, &map);
                    expanded.push(one);
                }
                map.remove("${{range.key}}");
                map.remove("${{range.value}}");
            }
        }
    }
    if !expanded.is_empty() {
        v["subpackages"] = Value::Array(expanded);
    }
    Ok(v)
}

/// Run `template` over the configuration `cfg` (read from `path`) as melange's `query` does.
pub fn query(cfg: &Configuration, path: &Path, template: &str) -> Result<String, QueryError> {
    let nodes = parse(template)?;
    let v = parse_time_view(cfg, path)?;
    let root = Val {
        v,
        ty: Ty::Struct("config.Configuration"),
    };
    let mut ex = Exec {
        root: root.clone(),
        vars: vec![],
    };
    let mut out = String::new();
    ex.run(&nodes, &root, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Configuration {
        crate::compile::parse_str(
            "package:\n  name: hello\n  version: 1.2.3\n  epoch: 4\n  timeout: 90m\n  dependencies:\n    runtime: [a, b]\nvars:\n  my-var: x\ndata:\n  - name: pys\n    items:\n      3.12: a\n      3.11: b\npipeline:\n  - uses: fetch\n    with:\n      uri: https://x/${{package.version}}-${{vars.my-var}}\n  - runs: make\n    working-directory: src\nsubpackages:\n  - name: hello-doc\n  - name: hello-dev\n  - name: py-${{range.key}}\n    range: pys\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap()
    }

    fn q(t: &str) -> Result<String, QueryError> {
        query(&cfg(), std::path::Path::new("t.yaml"), t)
    }

    #[test]
    fn fields_and_zero_values() {
        assert_eq!(
            q("{{ .Package.Name }}-{{ .Package.Version }}-r{{ .Package.Epoch }}").unwrap(),
            "hello-1.2.3-r4"
        );
        assert_eq!(q("[{{ .Package.Description }}]").unwrap(), "[]");
        assert_eq!(q("{{ .Package.Dependencies.Runtime }}").unwrap(), "[a b]");
        assert_eq!(q("{{ .Package.Dependencies.Provides }}").unwrap(), "[]");
        assert_eq!(q("{{ .Package.Timeout }}").unwrap(), "1h30m0s");
        assert_eq!(q("{{ .Package.Options }}").unwrap(), "<nil>");
        assert_eq!(q("{{ .Vars }}").unwrap(), "map[my-var:x]");
        assert_eq!(q("{{ index .Vars \"my-var\" }}").unwrap(), "x");
        assert_eq!(q("{{ (index .Pipeline 1).WorkDir }}").unwrap(), "src");
        assert_eq!(q("{{ len .Subpackages }}").unwrap(), "4");
        // Parse-time substitution, as melange's ParseConfiguration.
        assert_eq!(
            q("{{ (index .Pipeline 0).With.uri }}").unwrap(),
            "https://x/1.2.3-x"
        );
        assert_eq!(
            q("{{ range .Subpackages }}{{ .Name }},{{ end }}").unwrap(),
            "hello-doc,hello-dev,py-3.11,py-3.12,"
        );
        assert!(
            q("{{ .Package.Nope }}")
                .unwrap_err()
                .to_string()
                .contains("can't evaluate field Nope in type config.Package")
        );
        assert!(
            q("{{ .Package }}")
                .unwrap_err()
                .to_string()
                .contains("whole")
        );
    }

    #[test]
    fn control_flow_and_functions() {
        assert_eq!(
            q("{{ range .Subpackages }}{{ .Name }} {{ end }}").unwrap(),
            "hello-doc hello-dev py-3.11 py-3.12 "
        );
        assert_eq!(
            q("{{- range $i, $s := .Subpackages -}}\n{{ $i }}={{ $s.Name }};\n{{- end }}").unwrap(),
            "0=hello-doc;1=hello-dev;2=py-3.11;3=py-3.12;"
        );
        assert_eq!(
            q("{{ range .Pipeline }}{{ if .Uses }}uses {{ .Uses }}{{ else if .Runs }}runs {{ .Runs }}{{ else }}?{{ end }};{{ end }}")
                .unwrap(),
            "uses fetch;runs make;"
        );
        assert_eq!(
            q("{{ if eq .Package.Name \"hello\" \"x\" }}yes{{ end }}").unwrap(),
            "yes"
        );
        assert_eq!(
            q("{{ with .Package.Scriptlets }}s{{ else }}none{{ end }}").unwrap(),
            "none"
        );
        assert_eq!(
            q("{{ .Package.Name | printf \"%s-%d\" \"x\" }}").unwrap_or_default(),
            "x-hello"
        );
        assert_eq!(
            q("{{ printf \"%s/%s\" .Package.Name .Package.Version }}").unwrap(),
            "hello/1.2.3"
        );
        assert_eq!(q("{{/* a comment */}}ok").unwrap(), "ok");
        assert_eq!(q("{{ $v := .Package.Version }}{{ $v }}").unwrap(), "1.2.3");
        assert!(
            q("{{ define \"x\" }}{{ end }}")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(q("{{ if .Package.Name }}").is_err());
        assert!(q("{{ upper .Package.Name }}").is_err());
    }
}
