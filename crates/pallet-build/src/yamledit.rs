//! Text-preserving edits of melange YAML files: a block-style outline of the document (which
//! key or list item covers which bytes) so that `bump`, `source pop` and `license-check --fix`
//! change one value or one list item and leave comments, quoting, key order and blank lines as
//! written. Flow collections and multi-line scalars are kept as opaque values.

use std::ops::Range;

/// One node of the outline.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    /// The whole lines this node covers (from the start of its first line, or of the list
    /// item's dash line, to after the line break of its last line).
    pub lines: Range<usize>,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Map(Vec<Entry>),
    Seq(Vec<Node>),
    /// A scalar written on the key's (or dash's) line: the bytes of its value, comment
    /// excluded.
    Scalar(Range<usize>),
    /// A block scalar (`|`, `>`) or a value running over several lines.
    Block(Range<usize>),
    Null,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    /// The entry's own lines (key line to the end of its value).
    pub lines: Range<usize>,
    /// The column of the key.
    pub indent: usize,
    pub value: Node,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(es) => es.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.kind {
            Kind::Seq(v) => v,
            _ => &[],
        }
    }

    /// The decoded text of a one-line scalar.
    pub fn scalar(&self, text: &str) -> Option<String> {
        match &self.kind {
            Kind::Scalar(r) => Some(unquote(&text[r.clone()])),
            _ => None,
        }
    }

    /// Every mapping in this subtree (this node included), depth first, in document order.
    pub fn maps(&self) -> Vec<&Node> {
        let mut out = vec![];
        self.collect_maps(&mut out);
        out
    }

    fn collect_maps<'a>(&'a self, out: &mut Vec<&'a Node>) {
        match &self.kind {
            Kind::Map(es) => {
                out.push(self);
                for e in es {
                    e.value.collect_maps(out);
                }
            }
            Kind::Seq(items) => items.iter().for_each(|i| i.collect_maps(out)),
            _ => {}
        }
    }
}

/// Decode a plain, single- or double-quoted scalar.
pub fn unquote(raw: &str) -> String {
    let raw = raw.trim();
    if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
        return raw[1..raw.len() - 1].replace("''", "'");
    }
    if raw.len() >= 2 && raw.starts_with('"') && raw.ends_with('"') {
        let mut out = String::new();
        let mut it = raw[1..raw.len() - 1].chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('/') => out.push('/'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        }
        return out;
    }
    raw.to_string()
}

/// `value` written as YAML in the style of `like` (the scalar it replaces): the same quotes,
/// or plain when that reads back as the same string.
pub fn requote(value: &str, like: &str) -> String {
    let like = like.trim();
    if like.starts_with('"') {
        return double_quoted(value);
    }
    if like.starts_with('\'') {
        return format!("'{}'", value.replace('\'', "''"));
    }
    if plain_ok(value) {
        value.to_string()
    } else {
        double_quoted(value)
    }
}

pub fn double_quoted(value: &str) -> String {
    let mut s = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn plain_ok(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with([' ', ':'])
        && !v.contains('\n')
}

struct Parser<'a> {
    text: &'a str,
    /// (start, end without the line break, end with it) of every line.
    lines: Vec<(usize, usize, usize)>,
}

fn indent_of(s: &str) -> usize {
    s.len() - s.trim_start_matches(' ').len()
}

/// Where a key ends in `s` (the `:` followed by a space or the end), skipping quoted keys.
fn key_colon(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'"') | Some(b'\'')) {
        let q = b[0];
        i = 1;
        while i < b.len() && b[i] != q {
            i += 1;
        }
        i += 1;
    }
    while i < b.len() {
        if b[i] == b':' && (i + 1 == b.len() || b[i + 1] == b' ' || b[i + 1] == b'\t') {
            return Some(i);
        }
        if b[i] == b'#' && i > 0 && b[i - 1] == b' ' {
            return None;
        }
        if matches!(b[i], b'[' | b'{') && i == 0 {
            return None;
        }
        i += 1;
    }
    None
}

/// The end of a value on one line, before a ` #` comment that is not inside quotes.
fn value_end(s: &str) -> usize {
    let b = s.as_bytes();
    let mut q: Option<u8> = None;
    for i in 0..b.len() {
        match q {
            Some(c) if b[i] == c => q = None,
            Some(_) => {}
            None => {
                if (b[i] == b'"' || b[i] == b'\'') && (i == 0 || b[i - 1] == b' ') {
                    q = Some(b[i]);
                } else if b[i] == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') {
                    return s[..i].trim_end().len();
                }
            }
        }
    }
    s.trim_end().len()
}

impl<'a> Parser<'a> {
    fn line(&self, i: usize) -> &'a str {
        let (s, e, _) = self.lines[i];
        &self.text[s..e]
    }

    fn skip(&self, i: usize) -> bool {
        let l = self.line(i).trim_start();
        l.is_empty() || l.starts_with('#') || l == "---" || l.starts_with("--- ")
    }

    fn next_content(&self, mut i: usize) -> usize {
        while i < self.lines.len() && self.skip(i) {
            i += 1;
        }
        i
    }

    fn is_dash(&self, i: usize, col: usize) -> bool {
        let rest = self.line(i).get(col..).unwrap_or("");
        rest == "-" || rest.starts_with("- ") || rest.starts_with("-\t")
    }

    /// The end (exclusive) of the lines that belong to something at column `col`: every
    /// following line that is blank or indented deeper.
    fn deeper_until(&self, mut i: usize, col: usize) -> usize {
        let mut last = i;
        while i < self.lines.len() {
            let l = self.line(i);
            if l.trim().is_empty() {
                i += 1;
                continue;
            }
            if indent_of(l) <= col && !l.trim_start().starts_with('#') {
                break;
            }
            if indent_of(l) <= col {
                // A comment at the parent's level ends the value.
                break;
            }
            i += 1;
            last = i;
        }
        last
    }

    fn span(&self, from: usize, to: usize) -> Range<usize> {
        let start = self.lines[from].0;
        let end = if to == 0 { start } else { self.lines[to - 1].2 };
        start..end.max(start)
    }

    /// The node starting on line `i` at column `col`; returns it and the next line.
    fn node(&self, i: usize, col: usize) -> (Node, usize) {
        if self.is_dash(i, col) {
            self.seq(i, col)
        } else if key_colon(&self.line(i)[col..]).is_some() {
            self.map(i, col)
        } else {
            // A scalar on its own line (a list item written below its dash, or a document).
            let end = self.deeper_until(i + 1, col.saturating_sub(1));
            let l = self.line(i);
            let s = self.lines[i].0 + col;
            let kind = if end > i + 1 {
                Kind::Block(self.span(i, end))
            } else {
                Kind::Scalar(s..s + value_end(&l[col..]))
            };
            (
                Node {
                    kind,
                    lines: self.span(i, end),
                },
                end,
            )
        }
    }

    fn seq(&self, mut i: usize, col: usize) -> (Node, usize) {
        let first = i;
        let mut items = vec![];
        loop {
            let l = self.line(i);
            let after = &l[col + 1..];
            let c2 = col + 1 + indent_of(after);
            let rest = &l[c2.min(l.len())..];
            let (mut item, next) = if rest.is_empty() || rest.starts_with('#') {
                let n = self.next_content(i + 1);
                if n < self.lines.len() && indent_of(self.line(n)) > col {
                    self.node(n, indent_of(self.line(n)))
                } else {
                    (
                        Node {
                            kind: Kind::Null,
                            lines: self.span(i, i + 1),
                        },
                        i + 1,
                    )
                }
            } else {
                self.node(i, c2)
            };
            item.lines = self.span(i, next);
            items.push(item);
            let n = self.next_content(next);
            i = next;
            if n < self.lines.len() && indent_of(self.line(n)) == col && self.is_dash(n, col) {
                i = n;
                continue;
            }
            break;
        }
        (
            Node {
                kind: Kind::Seq(items),
                lines: self.span(first, i),
            },
            i,
        )
    }

    fn map(&self, mut i: usize, col: usize) -> (Node, usize) {
        let first = i;
        let mut entries = vec![];
        loop {
            let l = self.line(i);
            let body = &l[col..];
            let colon = key_colon(body).expect("a key");
            let key = unquote(&body[..colon]);
            let vstart = col + colon + 1;
            let after = &l[vstart..];
            let v0 = vstart + indent_of(after);
            let raw = &l[v0.min(l.len())..];
            let vlen = value_end(raw);
            let (value, next) = if vlen == 0 {
                let n = self.next_content(i + 1);
                if n < self.lines.len() && indent_of(self.line(n)) > col {
                    self.node(n, indent_of(self.line(n)))
                } else if n < self.lines.len()
                    && indent_of(self.line(n)) == col
                    && self.is_dash(n, col)
                {
                    self.seq(n, col)
                } else {
                    (
                        Node {
                            kind: Kind::Null,
                            lines: self.span(i, i + 1),
                        },
                        i + 1,
                    )
                }
            } else if raw.starts_with('|') || raw.starts_with('>') {
                let end = self.deeper_until(i + 1, col);
                (
                    Node {
                        kind: Kind::Block(self.span(i + 1, end.max(i + 1))),
                        lines: self.span(i, end.max(i + 1)),
                    },
                    end.max(i + 1),
                )
            } else {
                let end = self.deeper_until(i + 1, col);
                let s = self.lines[i].0 + v0;
                let kind = if end > i + 1 {
                    Kind::Block(s..self.lines[end - 1].1)
                } else {
                    Kind::Scalar(s..s + vlen)
                };
                (
                    Node {
                        kind,
                        lines: self.span(i, end.max(i + 1)),
                    },
                    end.max(i + 1),
                )
            };
            entries.push(Entry {
                key,
                lines: self.span(i, next),
                indent: col,
                value,
            });
            let n = self.next_content(next);
            i = next;
            if n < self.lines.len()
                && indent_of(self.line(n)) == col
                && !self.is_dash(n, col)
                && key_colon(&self.line(n)[col..]).is_some()
            {
                i = n;
                continue;
            }
            break;
        }
        (
            Node {
                kind: Kind::Map(entries),
                lines: self.span(first, i),
            },
            i,
        )
    }
}

/// The outline of a YAML document (its top-level mapping or list).
pub fn outline(text: &str) -> Node {
    let mut lines = vec![];
    let mut start = 0;
    for l in text.split_inclusive('\n') {
        let end_nl = start + l.len();
        let body = l.strip_suffix('\n').unwrap_or(l);
        let body = body.strip_suffix('\r').unwrap_or(body);
        lines.push((start, start + body.len(), end_nl));
        start = end_nl;
    }
    let p = Parser { text, lines };
    let i = p.next_content(0);
    if i >= p.lines.len() {
        return Node {
            kind: Kind::Null,
            lines: 0..0,
        };
    }
    let col = indent_of(p.line(i));
    p.node(i, col).0
}

/// Byte-range replacements applied together (ranges must not overlap).
#[derive(Default)]
pub struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    pub fn replace(&mut self, r: Range<usize>, with: impl Into<String>) {
        self.0.push((r, with.into()));
    }

    pub fn insert(&mut self, at: usize, with: impl Into<String>) {
        self.0.push((at..at, with.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn apply(mut self, text: &str) -> String {
        self.0.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (r, w) in self.0 {
            out.push_str(&text[at..r.start.max(at)]);
            out.push_str(&w);
            at = at.max(r.end);
        }
        out.push_str(&text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# top comment\npackage:\n  name: hello # the name\n  version: \"1.0\"\n  epoch: 3\n\npipeline:\n  # fetch it\n  - uses: fetch\n    with:\n      uri: https://x/${{package.version}}.tar.gz\n      expected-sha256: abc\n  - runs: |\n      - not: a list\n      echo hi\n  - uses: git-checkout\n    with:\n      expected-commit: 'dead'\nsubpackages:\n- name: x\n  pipeline:\n    - uses: split/dev\n";

    #[test]
    fn outline_finds_values_and_keeps_the_rest() {
        let o = outline(DOC);
        let pkg = o.get("package").unwrap();
        assert_eq!(pkg.get("name").unwrap().scalar(DOC).unwrap(), "hello");
        assert_eq!(pkg.get("version").unwrap().scalar(DOC).unwrap(), "1.0");
        let steps = o.get("pipeline").unwrap().items();
        assert_eq!(steps.len(), 3);
        assert_eq!(
            steps[0]
                .get("with")
                .unwrap()
                .get("expected-sha256")
                .unwrap()
                .scalar(DOC)
                .unwrap(),
            "abc"
        );
        assert!(matches!(steps[1].get("runs").unwrap().kind, Kind::Block(_)));
        assert_eq!(
            steps[2]
                .get("with")
                .unwrap()
                .get("expected-commit")
                .unwrap()
                .scalar(DOC)
                .unwrap(),
            "dead"
        );
        let subs = o.get("subpackages").unwrap().items();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].get("name").unwrap().scalar(DOC).unwrap(), "x");
        assert_eq!(
            &DOC[steps[0].lines.clone()],
            "  - uses: fetch\n    with:\n      uri: https://x/${{package.version}}.tar.gz\n      expected-sha256: abc\n"
        );
        let mut e = Edits::default();
        let Kind::Scalar(r) = pkg.get("version").unwrap().kind.clone() else {
            panic!()
        };
        e.replace(r, "\"2.0\"");
        let Kind::Scalar(r) = pkg.get("name").unwrap().kind.clone() else {
            panic!()
        };
        e.replace(r, "bye");
        let out = e.apply(DOC);
        assert!(
            out.contains("  name: bye # the name\n  version: \"2.0\"\n"),
            "{out}"
        );
        assert_eq!(out.len(), DOC.len() - 2);
    }

    #[test]
    fn quoting() {
        assert_eq!(unquote("'it''s'"), "it's");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(requote("1.2.3", "1.0"), "1.2.3");
        assert_eq!(requote("1.2.3", "'1.0'"), "'1.2.3'");
        assert_eq!(requote("a: b", "x"), "\"a: b\"");
    }
}
