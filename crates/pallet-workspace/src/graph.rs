//! The build graph: which recipe waits for which, matched by the names a recipe's packages
//! have and provide against the names its environment asks for. Pure: names in, order out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One node's names.
#[derive(Clone, Debug, Default)]
pub struct NodeNames {
    /// Package names it builds (the package and its subpackages) and what they provide.
    pub provides: Vec<String>,
    /// What its build environment asks for, as dependency atoms.
    pub needs: Vec<String>,
    /// Per package it builds: the names that package answers to (its own and what it
    /// provides) and its runtime dependencies. Installing a package installs those too, so
    /// whoever needs it waits for the recipes that build them.
    pub packages: Vec<(Vec<String>, Vec<String>)>,
}

/// Who builds what: names to (node, package) pairs, with each package's runtime needs.
pub struct Providers<'a> {
    nodes: &'a [NodeNames],
    by_name: BTreeMap<&'a str, Vec<(usize, Option<usize>)>>,
    /// `reach` per name, asked again and again by a large workspace.
    memo: std::cell::RefCell<BTreeMap<String, Option<std::rc::Rc<BTreeSet<usize>>>>>,
}

impl<'a> Providers<'a> {
    pub fn new(nodes: &'a [NodeNames]) -> Providers<'a> {
        let mut by_name: BTreeMap<&str, Vec<(usize, Option<usize>)>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for p in &node.provides {
                if let Some(name) = atom_name(p) {
                    let pkg = node
                        .packages
                        .iter()
                        .position(|(names, _)| names.iter().any(|n| atom_name(n) == Some(name)));
                    let v = by_name.entry(name).or_default();
                    if !v.contains(&(i, pkg)) {
                        v.push((i, pkg));
                    }
                }
            }
        }
        Providers {
            nodes,
            by_name,
            memo: Default::default(),
        }
    }

    /// The nodes whose packages installing `name` takes: its providers and, through runtime
    /// dependencies, theirs. `None` when no node provides it.
    pub fn reach(&self, name: &str) -> Option<std::rc::Rc<BTreeSet<usize>>> {
        if let Some(hit) = self.memo.borrow().get(name) {
            return hit.clone();
        }
        let r = self.reach_uncached(name).map(std::rc::Rc::new);
        self.memo.borrow_mut().insert(name.to_string(), r.clone());
        r
    }

    fn reach_uncached(&self, name: &str) -> Option<BTreeSet<usize>> {
        let start = self.by_name.get(name)?;
        let mut seen: BTreeSet<(usize, Option<usize>)> = start.iter().copied().collect();
        let mut queue: VecDeque<(usize, Option<usize>)> = start.iter().copied().collect();
        while let Some((i, pkg)) = queue.pop_front() {
            let Some(p) = pkg else { continue };
            for dep in &self.nodes[i].packages[p].1 {
                let Some(dn) = atom_name(dep) else { continue };
                for &x in self.by_name.get(dn).into_iter().flatten() {
                    if seen.insert(x) {
                        queue.push_back(x);
                    }
                }
            }
        }
        Some(seen.into_iter().map(|(i, _)| i).collect())
    }

    /// Whether node `i` itself provides `name`.
    pub fn direct(&self, name: &str) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|(i, _)| *i)
            .collect();
        v.dedup();
        v
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Per node, the nodes it waits for (sorted, no duplicates).
    pub after: Vec<Vec<usize>>,
    /// Per node, the names it needs that no other node provides: they come from the
    /// configured repositories (a node needing its own package is one of these).
    pub external: Vec<Vec<String>>,
    /// Cycles, each as the path `a, b, …` with `a` waiting for `b` and the last for `a`. The
    /// edges inside a cycle are dropped: its members take those packages from the configured
    /// repositories.
    pub cycles: Vec<Vec<usize>>,
    /// Every node, each after the nodes it waits for; ties keep the input order.
    pub order: Vec<usize>,
}

/// The package name of a dependency atom (`name>=1.2`, `so:libz.so.1`, `name@tag`), or none
/// for a conflict (`!name`).
pub fn atom_name(atom: &str) -> Option<&str> {
    let a = atom.trim();
    if a.starts_with('!') || a.is_empty() {
        return None;
    }
    let end = a.find(['=', '<', '>', '~', '@']).unwrap_or(a.len());
    Some(a[..end].trim())
}

pub fn build(nodes: &[NodeNames]) -> Graph {
    let n = nodes.len();
    let providers = Providers::new(nodes);
    let mut after = vec![BTreeSet::new(); n];
    let mut external = vec![BTreeSet::new(); n];
    for (i, node) in nodes.iter().enumerate() {
        for need in &node.needs {
            let Some(name) = atom_name(need) else {
                continue;
            };
            match providers.reach(name) {
                Some(reach) => {
                    if providers.direct(name).iter().all(|&p| p == i) {
                        // A recipe that needs its own package (a compiler built with an
                        // older copy of itself) takes it from the configured repositories.
                        external[i].insert(name.to_string());
                    }
                    after[i].extend(reach.iter().copied().filter(|&p| p != i));
                }
                None => {
                    external[i].insert(name.to_string());
                }
            }
        }
    }
    let mut after: Vec<Vec<usize>> = after.into_iter().map(|s| s.into_iter().collect()).collect();
    let sccs = tarjan(&after);
    let mut comp = vec![0usize; n];
    for (c, members) in sccs.iter().enumerate() {
        for &m in members {
            comp[m] = c;
        }
    }
    let mut cycles = vec![];
    for members in sccs.iter().filter(|m| m.len() > 1) {
        cycles.push(cycle_path(&after, members, &comp));
    }
    // Within a cycle nobody waits: drop those edges; the needs become external.
    for i in 0..n {
        let (inside, kept): (Vec<usize>, Vec<usize>) =
            after[i].iter().partition(|&&j| comp[j] == comp[i]);
        for j in inside {
            for p in &nodes[j].provides {
                if let Some(name) = atom_name(p)
                    && nodes[i].needs.iter().any(|x| atom_name(x) == Some(name))
                {
                    external[i].insert(name.to_string());
                }
            }
        }
        after[i] = kept;
    }
    let order = topo(&after);
    cycles.sort();
    Graph {
        after,
        external: external
            .into_iter()
            .map(|s| s.into_iter().collect())
            .collect(),
        cycles,
        order,
    }
}

/// Kahn's algorithm, always taking the lowest ready index so that the order is stable.
fn topo(after: &[Vec<usize>]) -> Vec<usize> {
    let n = after.len();
    let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
    let mut dependents = vec![vec![]; n];
    for (i, deps) in after.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

/// Strongly connected components (Tarjan's, iterative so that a long chain cannot overflow
/// the stack).
fn tarjan(after: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = after.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = vec![];
    let mut out = vec![];
    let mut next = 0;
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(start, 0)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut k)) = call.last_mut() {
            if *k < after[v].len() {
                let w = after[v][*k];
                *k += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                call.pop();
                if let Some(&(u, _)) = call.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = vec![];
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// A path around a strongly connected component, from its lowest member back to it.
fn cycle_path(after: &[Vec<usize>], members: &[usize], comp: &[usize]) -> Vec<usize> {
    let start = members[0];
    let c = comp[start];
    // Breadth-first from `start` to a node that waits for `start`, inside the component.
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut seen = BTreeSet::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &after[v] {
            if comp[w] != c {
                continue;
            }
            if w == start {
                let mut path = vec![v];
                let mut x = v;
                while let Some(&p) = prev.get(&x) {
                    path.push(p);
                    x = p;
                }
                path.reverse();
                return path;
            }
            if seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    members.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(provides: &[&str], needs: &[&str]) -> NodeNames {
        NodeNames {
            provides: provides.iter().map(|s| s.to_string()).collect(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            packages: vec![],
        }
    }

    #[test]
    fn order_and_externals() {
        let g = build(&[
            node(&["app"], &["busybox", "libfoo-dev>=1"]),
            node(&["libfoo", "libfoo-dev", "so:libfoo.so.1"], &["busybox"]),
            node(&["gcc"], &["gcc", "so:libfoo.so.1"]),
        ]);
        assert_eq!(g.after, vec![vec![1], vec![], vec![1]]);
        assert_eq!(g.external[0], ["busybox"]);
        assert_eq!(g.external[2], ["gcc"]);
        assert_eq!(g.order, [1, 0, 2]);
        assert!(g.cycles.is_empty());
        assert_eq!(atom_name("!x"), None);
        assert_eq!(atom_name("a@edge"), Some("a"));
    }

    #[test]
    fn cycles_are_reported_and_broken() {
        let g = build(&[
            node(&["a"], &["b"]),
            node(&["b"], &["c"]),
            node(&["c"], &["a"]),
            node(&["d"], &["a"]),
        ]);
        assert_eq!(g.cycles, vec![vec![0, 1, 2]]);
        assert!(g.after[0].is_empty() && g.after[1].is_empty() && g.after[2].is_empty());
        assert_eq!(g.after[3], [0]);
        assert_eq!(g.external[0], ["b"]);
        assert_eq!(g.order, [0, 1, 2, 3]);
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let n = 200_000;
        let nodes: Vec<NodeNames> = (0..n)
            .map(|i| NodeNames {
                provides: vec![format!("p{i}")],
                needs: if i > 0 {
                    vec![format!("p{}", i - 1)]
                } else {
                    vec![]
                },
                packages: vec![],
            })
            .collect();
        let g = build(&nodes);
        assert_eq!(g.order.len(), n);
        assert_eq!(g.order[0], 0);
    }

    #[test]
    fn runtime_dependencies_of_workspace_packages_are_waited_for() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nodes = vec![
            // app's program needs libfoo at run time; its -doc needs nothing.
            NodeNames {
                provides: names(&["app", "app-doc"]),
                needs: names(&["busybox"]),
                packages: vec![
                    (names(&["app"]), names(&["libfoo>=1"])),
                    (names(&["app-doc"]), vec![]),
                ],
            },
            NodeNames {
                provides: names(&["libfoo", "so:libfoo.so.1"]),
                needs: vec![],
                packages: vec![(
                    names(&["libfoo", "so:libfoo.so.1"]),
                    names(&["so:libbar.so.2"]),
                )],
            },
            NodeNames {
                provides: names(&["libbar", "so:libbar.so.2"]),
                needs: vec![],
                packages: vec![(names(&["libbar", "so:libbar.so.2"]), vec![])],
            },
            // Needs app: waits for libfoo and libbar too; needs app-doc only: app alone.
            NodeNames {
                provides: names(&["user"]),
                needs: names(&["app"]),
                packages: vec![],
            },
            NodeNames {
                provides: names(&["docs"]),
                needs: names(&["app-doc"]),
                packages: vec![],
            },
        ];
        let g = build(&nodes);
        assert_eq!(g.after[3], [0, 1, 2]);
        assert_eq!(g.after[4], [0]);
        assert!(Providers::new(&nodes).reach("nothing").is_none());
    }
}
