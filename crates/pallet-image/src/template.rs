//! `show-packages --format`: apko's presets, and the part of Go's `text/template` that such
//! formats use, over apko's three fields `.Name`, `.Version` and `.Source`.
//!
//! Supported: text; actions `{{ … }}` with the `{{-` / `-}}` trim markers and `{{/* */}}`
//! comments; `.` and the three fields; string (`"…"`, `` `…` ``), integer and `true`/`false`
//! constants; pipelines with `|`, parentheses, and the functions `printf`, `print`, `println`
//! and `len`, with Go's formatting (`%-20s`, `%q`, `%!s(MISSING)` …). Anything else (`if`,
//! `range`, variables, other functions) is refused when the template is parsed, naming what
//! is not supported, so a format never half-works.

/// apko's `--format` presets, and the template each one stands for.
pub const PRESETS: &[(&str, &str)] = &[
    ("name-version", "{{ .Name }} {{ .Version }}"),
    (
        "name-version-source",
        "{{ .Name }} {{ .Version }} {{ .Source }}",
    ),
    ("name=version", "{{ .Name }}={{ .Version }}"),
    (
        "name=version-source",
        "{{ .Name }}={{ .Version }} {{ .Source }}",
    ),
    ("name-(version)", "{{ .Name }} ({{ .Version }})"),
    (
        "name-(version)-source",
        "{{ .Name }} ({{ .Version }}) {{ .Source }}",
    ),
    ("packagelock", "- {{ .Name }}={{ .Version }}"),
    (
        "packagelock-source",
        "- {{ .Name }}={{ .Version }} # {{ .Source }}",
    ),
];

/// apko's default format (`name-version`).
pub const DEFAULT_FORMAT: &str = "name-version";

/// The template a `--format` value means: a preset's, or the value itself.
pub fn format_template(format: &str) -> &str {
    PRESETS
        .iter()
        .find(|(n, _)| *n == format)
        .map_or(format, |(_, t)| t)
}

/// What a template sees of one package.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// The package's URL: `<repository>/<arch>/<name>-<version>.apk`.
    pub source: &'a str,
}

#[derive(Clone, Debug)]
enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// `.` itself (apko's `pkgInfo` struct).
    Dot,
}

#[derive(Clone, Debug)]
enum Arg {
    Dot,
    Field(Field),
    Const(Value),
    Pipe(Pipeline),
}

#[derive(Clone, Copy, Debug)]
enum Field {
    Name,
    Version,
    Source,
}

#[derive(Clone, Copy, Debug)]
enum Func {
    Printf,
    Print,
    Println,
    Len,
}

#[derive(Clone, Debug)]
enum Command {
    Value(Arg),
    Call(Func, Vec<Arg>),
}

type Pipeline = Vec<Command>;

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
}

/// A parsed `--format` template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
}

const SUBSET: &str = "pallet's --format supports text, {{ .Name }}, {{ .Version }}, {{ .Source }}, \
                      {{ . }}, string and number constants, | pipelines, ( ), and the functions \
                      printf, print, println and len";

impl Template {
    /// Parse a Go template; constructs outside the supported subset are errors.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut nodes = vec![];
        let mut rest = text;
        let mut trim_next = false;
        while !rest.is_empty() {
            let Some(open) = rest.find("{{") else {
                push_text(&mut nodes, rest, trim_next, false);
                break;
            };
            let after = &rest[open + 2..];
            // `{{- ` trims the whitespace before the action.
            let (trim_left, inner_start) = match after.as_bytes() {
                [b'-', c, ..] if c.is_ascii_whitespace() => (true, 2),
                _ => (false, 0),
            };
            push_text(&mut nodes, &rest[..open], trim_next, trim_left);
            let inner = &after[inner_start..];
            let close = find_close(inner)
                .ok_or_else(|| format!("--format: unclosed action in {text:?}"))?;
            let mut body = &inner[..close];
            // ` -}}` trims the whitespace after it.
            trim_next = false;
            if let Some(b) = body.strip_suffix('-')
                && b.ends_with(|c: char| c.is_ascii_whitespace())
            {
                body = b;
                trim_next = true;
            }
            rest = &inner[close + 2..];
            let t = body.trim();
            if t.starts_with("/*") {
                if !t.ends_with("*/") {
                    return Err(format!("--format: unclosed comment in {text:?}"));
                }
                continue;
            }
            let tokens = lex(body)?;
            let mut p = Parser { t: &tokens, i: 0 };
            let pipe = p.pipeline()?;
            if p.i != tokens.len() {
                return Err(format!(
                    "--format: unexpected {:?} in {{{{{body}}}}}",
                    tokens[p.i]
                ));
            }
            nodes.push(Node::Action(pipe));
        }
        Ok(Template { nodes })
    }

    /// The template's text for one package.
    pub fn render(&self, row: &Row) -> Result<String, String> {
        let mut out = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&show(&eval_pipe(p, row)?, row)),
            }
        }
        Ok(out)
    }
}

fn push_text(nodes: &mut Vec<Node>, text: &str, trim_start: bool, trim_end: bool) {
    let mut t = text;
    if trim_start {
        t = t.trim_start_matches(|c: char| c.is_ascii_whitespace());
    }
    if trim_end {
        t = t.trim_end_matches(|c: char| c.is_ascii_whitespace());
    }
    if !t.is_empty() {
        nodes.push(Node::Text(t.to_string()));
    }
}

/// Where the `}}` closing an action is, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Dot,
    Field(String),
    Str(String),
    Int(i64),
    Ident(String),
    Pipe,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    let word = |i: &mut usize| {
        let st = *i;
        while *i < c.len() && (c[*i].is_alphanumeric() || c[*i] == '_') {
            *i += 1;
        }
        c[st..*i].iter().collect::<String>()
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            _ if ch.is_whitespace() => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '.' => {
                i += 1;
                if i < c.len() && (c[i].is_alphabetic() || c[i] == '_') {
                    let f = word(&mut i);
                    if i < c.len() && c[i] == '.' {
                        return Err(format!(
                            "--format: .{f}.…: the fields .Name, .Version and .Source have no fields"
                        ));
                    }
                    out.push(Tok::Field(f));
                } else {
                    out.push(Tok::Dot);
                }
            }
            '"' => {
                i += 1;
                let mut v = String::new();
                loop {
                    let Some(&ch) = c.get(i) else {
                        return Err("--format: unterminated string constant".into());
                    };
                    i += 1;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let e = c.get(i).copied().unwrap_or(' ');
                            i += 1;
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                '0' => '\0',
                                other => {
                                    return Err(format!(
                                        "--format: the escape \\{other} is not supported"
                                    ));
                                }
                            });
                        }
                        ch => v.push(ch),
                    }
                }
                out.push(Tok::Str(v));
            }
            '`' => {
                i += 1;
                let st = i;
                while i < c.len() && c[i] != '`' {
                    i += 1;
                }
                if i == c.len() {
                    return Err("--format: unterminated raw string".into());
                }
                out.push(Tok::Str(c[st..i].iter().collect()));
                i += 1;
            }
            '-' | '0'..='9' => {
                let st = i;
                i += 1;
                while i < c.len() && c[i].is_ascii_digit() {
                    i += 1;
                }
                let n: String = c[st..i].iter().collect();
                if i < c.len() && (c[i].is_alphanumeric() || c[i] == '.') {
                    return Err(format!("--format: {n}{}…: only whole numbers", c[i]));
                }
                out.push(Tok::Int(
                    n.parse()
                        .map_err(|_| format!("--format: {n:?} is not a number"))?,
                ));
            }
            '$' => {
                return Err(format!(
                    "--format: variables ($…) are not supported; {SUBSET}"
                ));
            }
            _ if ch.is_alphabetic() || ch == '_' => out.push(Tok::Ident(word(&mut i))),
            other => return Err(format!("--format: unexpected {other:?} in an action")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
}

impl Parser<'_> {
    fn pipeline(&mut self) -> Result<Pipeline, String> {
        let mut cmds = vec![self.command()?];
        while self.t.get(self.i) == Some(&Tok::Pipe) {
            self.i += 1;
            cmds.push(self.command()?);
        }
        Ok(cmds)
    }

    fn command(&mut self) -> Result<Command, String> {
        match self.t.get(self.i) {
            None | Some(Tok::Pipe) | Some(Tok::Close) => {
                Err("--format: an action or pipeline stage is empty".into())
            }
            Some(Tok::Ident(id)) if !matches!(id.as_str(), "true" | "false") => {
                let f = match id.as_str() {
                    "printf" => Func::Printf,
                    "print" => Func::Print,
                    "println" => Func::Println,
                    "len" => Func::Len,
                    "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block"
                    | "break" | "continue" => {
                        return Err(format!("--format: {{{{{id}}}}} is not supported; {SUBSET}"));
                    }
                    other => {
                        return Err(format!(
                            "--format: the function {other:?} is not supported; {SUBSET}"
                        ));
                    }
                };
                self.i += 1;
                let mut args = vec![];
                while let Some(a) = self.operand()? {
                    args.push(a);
                }
                Ok(Command::Call(f, args))
            }
            _ => {
                let a = self.operand()?.expect("checked above");
                if let Some(t) = self.t.get(self.i)
                    && !matches!(t, Tok::Pipe | Tok::Close)
                {
                    return Err(format!(
                        "--format: a value cannot take arguments (found {t:?} after it)"
                    ));
                }
                Ok(Command::Value(a))
            }
        }
    }

    /// One argument, or `None` at the end of the command.
    fn operand(&mut self) -> Result<Option<Arg>, String> {
        let Some(t) = self.t.get(self.i) else {
            return Ok(None);
        };
        let a = match t {
            Tok::Pipe | Tok::Close => return Ok(None),
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => Arg::Field(match f.as_str() {
                "Name" => Field::Name,
                "Version" => Field::Version,
                "Source" => Field::Source,
                other => {
                    return Err(format!(
                        "--format: there is no field .{other} (the fields are .Name, .Version and .Source)"
                    ));
                }
            }),
            Tok::Str(s) => Arg::Const(Value::Str(s.clone())),
            Tok::Int(n) => Arg::Const(Value::Int(*n)),
            Tok::Ident(b) if b == "true" || b == "false" => Arg::Const(Value::Bool(b == "true")),
            Tok::Ident(f) => {
                return Err(format!(
                    "--format: {f} as an argument needs parentheses: ({f} …)"
                ));
            }
            Tok::Open => {
                self.i += 1;
                let p = self.pipeline()?;
                if self.t.get(self.i) != Some(&Tok::Close) {
                    return Err("--format: unclosed (".into());
                }
                Arg::Pipe(p)
            }
        };
        self.i += 1;
        Ok(Some(a))
    }
}

fn field(f: Field, row: &Row) -> String {
    match f {
        Field::Name => row.name,
        Field::Version => row.version,
        Field::Source => row.source,
    }
    .to_string()
}

fn eval_arg(a: &Arg, row: &Row) -> Result<Value, String> {
    Ok(match a {
        Arg::Dot => Value::Dot,
        Arg::Field(f) => Value::Str(field(*f, row)),
        Arg::Const(v) => v.clone(),
        Arg::Pipe(p) => eval_pipe(p, row)?,
    })
}

fn eval_pipe(p: &Pipeline, row: &Row) -> Result<Value, String> {
    let mut last: Option<Value> = None;
    for c in p {
        last = Some(match c {
            Command::Value(a) => {
                if last.is_some() {
                    return Err("--format: only a function can follow | in a pipeline".into());
                }
                eval_arg(a, row)?
            }
            Command::Call(f, args) => {
                let mut vals = args
                    .iter()
                    .map(|a| eval_arg(a, row))
                    .collect::<Result<Vec<_>, _>>()?;
                // The value coming down the pipe is the last argument, as in Go.
                vals.extend(last.take());
                call(*f, &vals, row)?
            }
        });
    }
    Ok(last.expect("a pipeline has a command"))
}

fn call(f: Func, args: &[Value], row: &Row) -> Result<Value, String> {
    Ok(match f {
        Func::Printf => {
            let Some(Value::Str(fmt)) = args.first() else {
                return Err("--format: printf needs a format string first".into());
            };
            Value::Str(sprintf(fmt, &args[1..], row))
        }
        Func::Print => {
            let mut s = String::new();
            for (i, a) in args.iter().enumerate() {
                // fmt.Sprint: a space between operands when neither is a string.
                if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
                    s.push(' ');
                }
                s.push_str(&show(a, row));
            }
            Value::Str(s)
        }
        Func::Println => {
            let parts: Vec<String> = args.iter().map(|a| show(a, row)).collect();
            Value::Str(parts.join(" ") + "\n")
        }
        Func::Len => match args {
            [Value::Str(s)] => Value::Int(s.len() as i64),
            [other] => return Err(format!("--format: len of {}", type_name(other))),
            _ => return Err("--format: len takes one argument".into()),
        },
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Bool(_) => "bool",
        Value::Dot => "cli.pkgInfo",
    }
}

/// A value as `fmt.Print` shows it.
fn show(v: &Value, row: &Row) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Dot => format!("{{{} {} {}}}", row.name, row.version, row.source),
    }
}

/// `strconv.Quote` for the characters package names and URLs hold.
fn go_quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `fmt.Sprintf` for the verbs a format of strings and numbers needs: `s v q d x X` with
/// flags `-` and `0`, a width and a precision, `%%`, and Go's `%!` notes for missing, extra
/// and mismatched arguments.
fn sprintf(fmt: &str, args: &[Value], row: &Row) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut zero) = (false, false);
        while let Some(&f) = it.peek() {
            match f {
                '-' => minus = true,
                '0' => zero = true,
                '+' | '#' | ' ' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = None;
        while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            it.next();
        }
        let mut prec = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = 0;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                it.next();
            }
            prec = Some(p);
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", type_name(arg), show(arg, row));
        let text = match (verb, arg) {
            ('s' | 'v', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('v', v) => show(v, row),
            ('q', Value::Str(s)) => go_quote(s),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('d', Value::Int(n)) => n.to_string(),
            ('x', Value::Int(n)) => format!("{n:x}"),
            ('X', Value::Int(n)) => format!("{n:X}"),
            ('t', Value::Bool(b)) => b.to_string(),
            _ => {
                out.push_str(&bad());
                continue;
            }
        };
        let len = text.chars().count();
        let pad = width.map_or(0, |w| w.saturating_sub(len));
        if minus {
            out.push_str(&text);
            out.push_str(&" ".repeat(pad));
        } else {
            out.push_str(&(if zero { "0" } else { " " }).repeat(pad));
            out.push_str(&text);
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", type_name(a), show(a, row)))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: Row = Row {
        name: "busybox",
        version: "1.36.1-r15",
        source: "https://r/main/x86_64/busybox-1.36.1-r15.apk",
    };

    fn r(t: &str) -> String {
        Template::parse(t).unwrap().render(&ROW).unwrap()
    }

    #[test]
    fn presets_render_as_apko_prints_them() {
        let p = |n: &str| r(format_template(n));
        assert_eq!(p("name-version"), "busybox 1.36.1-r15");
        assert_eq!(p("name=version"), "busybox=1.36.1-r15");
        assert_eq!(p("name-(version)"), "busybox (1.36.1-r15)");
        assert_eq!(p("packagelock"), "- busybox=1.36.1-r15");
        assert_eq!(
            p("packagelock-source"),
            "- busybox=1.36.1-r15 # https://r/main/x86_64/busybox-1.36.1-r15.apk"
        );
        assert_eq!(
            p("name-version-source"),
            "busybox 1.36.1-r15 https://r/main/x86_64/busybox-1.36.1-r15.apk"
        );
        assert_eq!(format_template("{{.Name}}"), "{{.Name}}");
    }

    #[test]
    fn go_template_subset() {
        assert_eq!(r("{{.Name}}\t{{.Version}}"), "busybox\t1.36.1-r15");
        assert_eq!(r("a  {{- .Name -}}  b"), "abusyboxb");
        assert_eq!(r("{{/* a comment */}}x"), "x");
        assert_eq!(
            r("{{ printf \"%-10s|%s\" .Name .Version }}"),
            "busybox   |1.36.1-r15"
        );
        assert_eq!(r("{{ .Name | printf \"%q\" }}"), "\"busybox\"");
        assert_eq!(r("{{ printf \"%.3s\" .Name }}"), "bus");
        assert_eq!(r("{{ len .Name }}"), "7");
        assert_eq!(r("{{ .Name | len | printf \"%03d\" }}"), "007");
        assert_eq!(r("{{ print .Name \"@\" .Version }}"), "busybox@1.36.1-r15");
        assert_eq!(r("{{ print 1 2 }}"), "1 2");
        assert_eq!(r("{{ println .Name }}"), "busybox\n");
        assert_eq!(r("{{ printf \"%s-%s\" .Name }}"), "busybox-%!s(MISSING)");
        assert_eq!(r("{{ printf \"%d\" .Name }}"), "%!d(string=busybox)");
        assert_eq!(r("{{ printf \"%s\" .Name 3 }}"), "busybox%!(EXTRA int=3)");
        assert_eq!(
            r("{{ printf \"%s\" (printf \"<%s>\" .Name) }}"),
            "<busybox>"
        );
        assert_eq!(r("{{ `raw` }} {{ \"a\\tb\" }}"), "raw a\tb");
        assert_eq!(
            r("{{ . }}"),
            "{busybox 1.36.1-r15 https://r/main/x86_64/busybox-1.36.1-r15.apk}"
        );
        assert_eq!(r("no actions"), "no actions");
        assert_eq!(r("{{\"}}\"}}"), "}}");
    }

    #[test]
    fn outside_the_subset_is_refused_clearly() {
        let e = |t: &str| Template::parse(t).unwrap_err();
        assert!(e("{{ .Arch }}").contains("no field .Arch"));
        assert!(e("{{ if .Name }}x{{ end }}").contains("{{if}} is not supported"));
        assert!(e("{{ $x := .Name }}").contains("variables"));
        assert!(e("{{ upper .Name }}").contains("\"upper\" is not supported"));
        assert!(e("{{ .Name").contains("unclosed"));
        assert!(e("{{ .Name .Version }}").contains("cannot take arguments"));
        assert!(e("{{ }}").contains("empty"));
    }
}
