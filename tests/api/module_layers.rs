//! The crate's top-level modules depend on each other without a cycle: each names
//! (`crate::x`, outside comments) only modules below it. Reads the sources; fails
//! naming the cycle it finds, or when the module graph in `ARCHITECTURE.md` no longer
//! matches the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_owned()),
        None => Some(first),
    }
}

/// The modules named as `crate::name` in code (comments left out).
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut modules = BTreeSet::new();
    for f in &files {
        if let Some(m) = module_of(&src, f) {
            modules.insert(m);
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(&src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for to in named(&text) {
            // Items of the crate root (`crate::cpu_count`) are not modules.
            if to != from && modules.contains(&to) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for to in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
    assert!(
        edges.contains_key("pool"),
        "the scan found the pool's imports"
    );
    picture_is_current(&modules, &edges);
}

/// Each module's layer: 0 for one that names no other, else one above the highest
/// module it names.
fn layers(
    modules: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, usize> {
    fn layer(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(&l) = memo.get(m) {
            return l;
        }
        let l = edges
            .get(m)
            .into_iter()
            .flatten()
            .map(|to| layer(to, edges, memo) + 1)
            .max()
            .unwrap_or(0);
        memo.insert(m.to_owned(), l);
        l
    }
    let mut memo = BTreeMap::new();
    for m in modules {
        layer(m, edges, &mut memo);
    }
    memo
}

/// The module graph as `ARCHITECTURE.md` draws it: one line per module, top layer
/// first, each with the modules it names.
fn picture(modules: &BTreeSet<String>, edges: &BTreeMap<String, BTreeSet<String>>) -> String {
    let layers = layers(modules, edges);
    let top = layers.values().copied().max().unwrap_or(0);
    let mut out = String::new();
    for l in (0..=top).rev() {
        for (m, _) in layers.iter().filter(|(_, &ml)| ml == l) {
            let names: Vec<&str> = edges
                .get(m)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let line = format!("{l:>2}  {m:<12}-> {}", names.join(", "));
            out.push_str(line.trim_end_matches([' ', '-', '>']));
            out.push('\n');
        }
    }
    out
}

/// `ARCHITECTURE.md` shows the graph as it is: a new dependency changes the picture,
/// and the test prints the new one to paste in.
fn picture_is_current(modules: &BTreeSet<String>, edges: &BTreeMap<String, BTreeSet<String>>) {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let begin = "<!-- module graph: begin -->\n```text\n";
    let end = "```\n<!-- module graph: end -->";
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        panic!("ARCHITECTURE.md lacks the module graph markers");
    };
    let drawn = &doc[b + begin.len()..e];
    let actual = picture(modules, edges);
    assert!(
        drawn == actual,
        "ARCHITECTURE.md's module graph is out of date; the graph now is:\n{actual}"
    );
}
