//! `dot`: the resolved package graph as Graphviz, drawn the way apko's `dot` command draws it:
//!
//! * a node for the configuration file, with an edge to every requested package;
//! * a requested constraint (`busybox=1.36.1-r15`, `foo~1`, `bar@edge`) gets its own node with
//!   an edge to the package name it constrains;
//! * every resolved package is a node labelled `name-version` (its description as tooltip),
//!   with an edge to each dependency's name;
//! * a name that a package provides with a version (`so:libc.musl-x86_64.so.1=1`) and that
//!   something depends on is a box with an edge to its provider; an unversioned provide gets
//!   a plain edge;
//! * when resolution fails, an `❌ error` node leads to one node per problem the resolver
//!   reported;
//! * with `spanning_tree` (`-S`), a dependency or provider already drawn is not drawn again,
//!   for graphs with fewer edges.
//!
//! Nodes and edges are written in the order they are first made, as apko's `tmc/dot` writes
//! them. On purpose, unlike apko: conflicts (`!name`) are not drawn as dependencies, a
//! dependency's version constraint is removed whatever its operator (apko only cuts at `=`
//! and `~`, leaving `name>` nodes), and every identifier that is not a plain word is quoted
//! (apko leaves `cmd:foo` bare, which Graphviz reads as node `cmd`, port `foo`).

use std::collections::{BTreeMap, BTreeSet};

use pallet_apk_types::{Dependency, PackageInfo};

/// What the graph is drawn from.
pub struct Graph<'a> {
    /// The configuration file as named on the command line.
    pub config: &'a str,
    /// The requested packages as written (`contents.packages`, then `-p`).
    pub requested: &'a [String],
    /// The resolved packages, in install order (empty when resolution failed).
    pub packages: &'a [&'a PackageInfo],
    /// The resolver's problems, one per entry, when resolution failed.
    pub problems: &'a [String],
    pub spanning_tree: bool,
}

enum Obj {
    Node(String),
    Edge(String, String),
}

#[derive(Default)]
struct Out {
    objs: Vec<Obj>,
    attrs: BTreeMap<String, BTreeMap<&'static str, String>>,
}

impl Out {
    fn node(&mut self, name: &str) {
        if !self.attrs.contains_key(name) {
            self.attrs.insert(name.to_string(), BTreeMap::new());
            self.objs.push(Obj::Node(name.to_string()));
        }
    }
    fn set(&mut self, name: &str, key: &'static str, value: &str) {
        self.node(name);
        if let Some(a) = self.attrs.get_mut(name) {
            a.insert(key, value.to_string());
        }
    }
    fn edge(&mut self, from: &str, to: &str) {
        self.node(from);
        self.node(to);
        self.objs.push(Obj::Edge(from.to_string(), to.to_string()));
    }
}

/// A DOT identifier: a plain word as is, anything else in double quotes.
fn id(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let keyword = ["graph", "digraph", "subgraph", "node", "edge", "strict"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(s));
    if plain && !keyword {
        return s.to_string();
    }
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The package name a requested spec or dependency string constrains.
fn base_name(spec: &str) -> &str {
    let end = spec.find(['=', '<', '>', '~', '@']).unwrap_or(spec.len());
    &spec[..end]
}

fn label(p: &PackageInfo) -> String {
    format!("{}-{}", p.name, p.version)
}

/// The graph as Graphviz `dot` text.
pub fn render(g: &Graph) -> String {
    let mut o = Out::default();
    let mut deps: BTreeSet<String> = BTreeSet::new();
    let mut drawn: BTreeSet<String> = BTreeSet::new();
    o.node(g.config);
    for spec in g.requested {
        o.edge(g.config, spec);
        let base = base_name(spec);
        if base != spec && !base.is_empty() {
            o.edge(spec, base);
        }
        deps.insert(base.to_string());
    }
    for p in g.packages {
        o.set(&p.name, "label", &label(p));
        o.set(&p.name, "tooltip", &p.description);
        for d in p.depends.iter().filter(|d| !d.conflict) {
            if !g.spanning_tree || !drawn.contains(&d.name) {
                if p.name != d.name {
                    o.edge(&p.name, &d.name);
                    drawn.insert(d.name.clone());
                }
            } else {
                o.node(&d.name);
            }
            deps.insert(d.name.clone());
        }
    }
    for p in g.packages {
        o.set(&p.name, "label", &label(p));
        for prov in &p.provides {
            provides_edge(&mut o, g.spanning_tree, &deps, &mut drawn, p, prov);
        }
    }
    if !g.problems.is_empty() {
        let err = "❌ error";
        o.node(err);
        for pr in g.problems {
            o.edge(err, &format!("❌ {}", pr.trim()));
        }
    }
    let mut s = String::from("digraph images {\ngraph [\n  rankdir=LR;\n];\n");
    for obj in &o.objs {
        match obj {
            Obj::Node(n) => {
                let a = &o.attrs[n];
                if a.is_empty() {
                    s.push_str(&format!("{};\n", id(n)));
                } else {
                    let kv: Vec<String> = a.iter().map(|(k, v)| format!("{k}={}", id(v))).collect();
                    s.push_str(&format!("{} [{}];\n", id(n), kv.join(", ")));
                }
            }
            Obj::Edge(a, b) => s.push_str(&format!("{} -> {}\n", id(a), id(b))),
        }
    }
    s.push_str("}\n");
    s
}

fn provides_edge(
    o: &mut Out,
    span: bool,
    deps: &BTreeSet<String>,
    drawn: &mut BTreeSet<String>,
    p: &PackageInfo,
    prov: &Dependency,
) {
    if !deps.contains(&prov.name) {
        return;
    }
    if !prov.version.is_empty() {
        // A versioned provide someone depends on: a box pointing at its provider.
        o.set(&prov.name, "shape", "rect");
        o.edge(&prov.name, &p.name);
    } else if !span || !drawn.contains(&p.name) {
        o.edge(&prov.name, &p.name);
        drawn.insert(p.name.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, ver: &str, deps: &str, provides: &str) -> PackageInfo {
        PackageInfo {
            name: name.into(),
            version: ver.into(),
            description: format!("the {name}"),
            depends: Dependency::parse_list(deps).unwrap(),
            provides: Dependency::parse_list(provides).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn graph_as_apko_draws_it() {
        let musl = pkg("musl", "1.2.4-r2", "", "so:libc.musl-x86_64.so.1=1");
        let bb = pkg(
            "busybox",
            "1.36.1-r15",
            "so:libc.musl-x86_64.so.1 !busybox-extras",
            "cmd:sh=1.36.1-r15",
        );
        let pkgs = [&musl, &bb];
        let req = vec!["busybox=1.36.1-r15".to_string()];
        let text = render(&Graph {
            config: "apko.yaml",
            requested: &req,
            packages: &pkgs,
            problems: &[],
            spanning_tree: false,
        });
        let want = "digraph images {\ngraph [\n  rankdir=LR;\n];\n\
\"apko.yaml\";\n\
\"busybox=1.36.1-r15\";\n\
\"apko.yaml\" -> \"busybox=1.36.1-r15\"\n\
busybox [label=\"busybox-1.36.1-r15\", tooltip=\"the busybox\"];\n\
\"busybox=1.36.1-r15\" -> busybox\n\
musl [label=\"musl-1.2.4-r2\", tooltip=\"the musl\"];\n\
\"so:libc.musl-x86_64.so.1\" [shape=rect];\n\
busybox -> \"so:libc.musl-x86_64.so.1\"\n\
\"so:libc.musl-x86_64.so.1\" -> musl\n\
}\n";
        assert_eq!(text, want);
    }

    #[test]
    fn errors_are_nodes_and_spanning_tree_drops_repeats() {
        let a = pkg("a", "1-r0", "c", "");
        let b = pkg("b", "1-r0", "c", "");
        let c = pkg("c", "1-r0", "", "");
        let pkgs = [&c, &a, &b];
        let req = vec!["a".to_string(), "b".to_string()];
        let g = |span| {
            render(&Graph {
                config: "x.yaml",
                requested: &req,
                packages: &pkgs,
                problems: &[],
                spanning_tree: span,
            })
        };
        assert!(g(false).contains("a -> c\n") && g(false).contains("b -> c\n"));
        assert!(g(true).contains("a -> c\n") && !g(true).contains("b -> c\n"));
        let problems = vec!["nope (no such package):\n  required by: world[nope]".to_string()];
        let e = render(&Graph {
            config: "x.yaml",
            requested: &["nope".to_string()],
            packages: &[],
            problems: &problems,
            spanning_tree: false,
        });
        assert!(
            e.contains(
                "\"❌ error\" -> \"❌ nope (no such package):\\n  required by: world[nope]\"\n"
            ),
            "{e}"
        );
    }

    #[test]
    fn identifiers_are_quoted_unless_plain() {
        assert_eq!(id("busybox"), "busybox");
        assert_eq!(id("cmd:sh"), "\"cmd:sh\"");
        assert_eq!(id("graph"), "\"graph\"");
        assert_eq!(id("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
