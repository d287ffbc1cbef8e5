//! What a person or a script sees: the plan as text, JSON or Graphviz, the live view of a
//! build (indicatif on a terminal, plain lines otherwise), and the summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::Workspace;
use crate::run::{self, Decision, NodeRef, NodeResult, Observer, Outcome};

use crate::run::label;

fn after_names(ws: &Workspace, n: NodeRef) -> Vec<String> {
    run::deps(ws, n)
        .into_iter()
        .map(|d| match d {
            NodeRef::Recipe(i) => ws.recipes[i].name.clone(),
            NodeRef::Image(j) => ws.images[j].name.clone(),
        })
        .collect()
}

fn cycles(ws: &Workspace) -> Vec<Vec<String>> {
    ws.graph
        .cycles
        .iter()
        .map(|c| c.iter().map(|&i| ws.recipes[i].name.clone()).collect())
        .collect()
}

/// The plan as one JSON object: `{"packages": [...], "images": [...], "cycles": [...]}`.
pub fn plan_json(ws: &Workspace, plan: &[Decision]) -> Value {
    let mut packages = vec![];
    let mut images = vec![];
    for d in plan {
        match d.node {
            NodeRef::Recipe(i) => {
                let r = &ws.recipes[i];
                packages.push(json!({
                    "package": r.name,
                    "version": r.version,
                    "arch": r.arch.apk(),
                    "file": r.file.display().to_string(),
                    "subpackages": r.outputs[1..],
                    "after": after_names(ws, d.node),
                    "external": ws.graph.external[i],
                    "state": d.state,
                    "reason": d.reason,
                    "key": d.key,
                }));
            }
            NodeRef::Image(j) => {
                let img = &ws.images[j];
                images.push(json!({
                    "image": img.name,
                    "archs": img.archs.iter().map(|a| a.apk()).collect::<Vec<_>>(),
                    "file": img.file.display().to_string(),
                    "tags": img.tags,
                    "after": after_names(ws, d.node),
                    "external": ws.image_external[j],
                    "state": d.state,
                    "reason": d.reason,
                    "key": d.key,
                }));
            }
        }
    }
    json!({"packages": packages, "images": images, "cycles": cycles(ws)})
}

/// The plan as lines: `STATE  NODE  (reason)`, in build order.
pub fn plan_text(ws: &Workspace, plan: &[Decision]) -> String {
    let mut s = String::new();
    for d in plan {
        let after = after_names(ws, d.node);
        let _ = write!(s, "{:<7} {}", d.state, label(ws, d.node));
        if d.state != "cached" {
            let _ = write!(s, ": {}", d.reason);
        }
        if !after.is_empty() {
            let _ = write!(s, " [after {}]", after.join(", "));
        }
        s.push('\n');
    }
    for c in cycles(ws) {
        let _ = writeln!(
            s,
            "cycle: {} → {} (taken from the configured repositories)",
            c.join(" → "),
            c[0]
        );
    }
    let n = plan.iter().filter(|d| d.state == "build").count();
    let _ = writeln!(s, "{n} to build, {} cached", plan.len() - n);
    s
}

/// The graph for Graphviz: an edge from each node to what it waits for.
pub fn plan_dot(ws: &Workspace, plan: &[Decision]) -> String {
    let q = |s: String| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = String::from("digraph workspace {\n  rankdir=LR;\n");
    for d in plan {
        let shape = if matches!(d.node, NodeRef::Image(_)) {
            "box"
        } else {
            "ellipse"
        };
        let style = if d.state == "cached" { "solid" } else { "bold" };
        let _ = writeln!(
            s,
            "  {} [shape={shape}, style={style}];",
            q(label(ws, d.node))
        );
        for dep in run::deps(ws, d.node) {
            let _ = writeln!(s, "  {} -> {};", q(label(ws, d.node)), q(label(ws, dep)));
        }
    }
    s.push_str("}\n");
    s
}

/// The live view: a line per running build on a terminal (with how long it has run and how
/// many wait), plain lines otherwise.
pub struct View {
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<BTreeMap<String, indicatif::ProgressBar>>,
    head: Option<indicatif::ProgressBar>,
}

impl View {
    pub fn new(terminal: bool) -> View {
        if !terminal {
            return View {
                multi: None,
                bars: Mutex::new(BTreeMap::new()),
                head: None,
            };
        }
        let multi = indicatif::MultiProgress::new();
        let head = multi.add(indicatif::ProgressBar::new_spinner());
        head.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
        );
        head.enable_steady_tick(Duration::from_millis(200));
        View {
            multi: Some(multi),
            bars: Mutex::new(BTreeMap::new()),
            head: Some(head),
        }
    }

    fn print(&self, line: String) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(h) = &self.head {
            h.finish_and_clear();
        }
    }
}

impl Observer for View {
    fn start(&self, label: &str, reason: &str) {
        match &self.multi {
            Some(m) => {
                let b = m.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                        .expect("valid template"),
                );
                b.set_message(format!("{label}: {reason}"));
                b.enable_steady_tick(Duration::from_millis(200));
                self.bars.lock().unwrap().insert(label.to_string(), b);
            }
            None => eprintln!("build {label}: {reason}"),
        }
    }

    fn finish(&self, label: &str, outcome: &Outcome, time: Duration) {
        if let Some(b) = self.bars.lock().unwrap().remove(label) {
            b.finish_and_clear();
            if let Some(m) = &self.multi {
                m.remove(&b);
            }
        }
        let t = secs(time);
        match outcome {
            Outcome::Cached => self.print(format!("cached  {label}")),
            Outcome::Built { .. } if label.starts_with("test ") => {
                self.print(format!("passed  {label} in {t}"))
            }
            Outcome::Built { unchanged, .. } => self.print(format!(
                "built   {label} in {t}{}",
                if *unchanged {
                    " (output unchanged: what depends on it stays cached)"
                } else {
                    ""
                }
            )),
            Outcome::Failed { error, log } => self.print(format!(
                "FAILED  {label} after {t}: {error}{}",
                log.as_ref()
                    .map(|l| format!("\n        log: {}", l.display()))
                    .unwrap_or_default()
            )),
            Outcome::NotBuilt { because } => self.print(format!("skipped {label}: {because}")),
        }
    }

    fn note(&self, label: &str, message: &str) {
        self.print(format!("remote  {label}: {message}"));
    }

    fn waiting(&self, n: usize) {
        if let Some(h) = &self.head {
            h.set_message(format!("{n} waiting"));
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The closing summary: counts and the slowest builds.
pub fn summary(ws: &Workspace, results: &[NodeResult], started: Instant) -> String {
    let mut built = 0;
    let mut unchanged = 0;
    let mut cached = 0;
    let mut failed = vec![];
    let mut skipped = 0;
    for r in results {
        match &r.outcome {
            Outcome::Built { unchanged: u, .. } => {
                built += 1;
                if *u {
                    unchanged += 1;
                }
            }
            Outcome::Cached => cached += 1,
            Outcome::Failed { .. } => failed.push(label(ws, r.node)),
            Outcome::NotBuilt { .. } => skipped += 1,
        }
    }
    let mut s = format!(
        "{built} built{}, {cached} cached, {} failed, {skipped} not built, in {}",
        if unchanged > 0 {
            format!(" ({unchanged} with unchanged output)")
        } else {
            String::new()
        },
        failed.len(),
        secs(started.elapsed())
    );
    if !failed.is_empty() {
        let _ = write!(s, "\nfailed: {}", failed.join(", "));
    }
    s
}

/// The results as JSON, for scripts.
pub fn results_json(ws: &Workspace, results: &[NodeResult]) -> Value {
    let nodes: Vec<Value> = results
        .iter()
        .map(|r| {
            let (state, detail) = match &r.outcome {
                Outcome::Cached => ("cached", Value::Null),
                Outcome::Built { unchanged, reason } => (
                    "built",
                    json!({"reason": reason, "unchanged": unchanged}),
                ),
                Outcome::Failed { error, log } => (
                    "failed",
                    json!({"error": error, "log": log.as_ref().map(|l| l.display().to_string())}),
                ),
                Outcome::NotBuilt { because } => ("not-built", json!({"because": because})),
            };
            json!({"node": label(ws, r.node), "state": state, "detail": detail, "seconds": r.time.as_secs_f64()})
        })
        .collect();
    json!({"results": nodes})
}
