//! Workspace-wide tidy checks: crate layering and lint inheritance, read from `cargo metadata`.
//!
//! This test guards the whole workspace, not this crate. It lives here because iouring-storage
//! is the only crate so far; move it to a better home (bench-harness, or a small `xtask`) when
//! one exists.
//!
//! The layering is the picture in shared/STYLE.md ("Crates and layering"). A crate depends only
//! on crates below it and siblings never depend on each other; the same rule holds for normal,
//! build and dev dependencies alike. Every member also inherits the workspace lints.
//!
//! `unsafe` code: the workspace lint is `unsafe_code = "deny"` (not "forbid", so that a module
//! that must can opt out), and only the files in `UNSAFE_ALLOWED` may opt out. In those, every
//! `unsafe` block and impl has a `// SAFETY:` comment just above it, and every `unsafe fn`
//! outside an `unsafe impl` a `# Safety` section in its doc comment (STYLE.md, "unsafe").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Every workspace crate and the workspace crates it may depend on. A crate missing here is an
/// error: place it in the layering on purpose.
const LAYERS: &[(&str, &[&str])] = &[
    ("iouring-storage", &[]),
    ("tiering", &["iouring-storage"]),
    ("replication", &["iouring-storage"]),
    ("shard", &["tiering", "replication", "iouring-storage"]),
    ("broker", &["shard", "tiering", "replication", "iouring-storage"]),
    // Nothing depends on perf or bench-harness, and as siblings they never depend on each other.
    ("perf", &["broker", "shard", "tiering", "replication", "iouring-storage"]),
    ("bench-harness", &["broker", "shard", "tiering", "replication", "iouring-storage"]),
];

/// One declared dependency between two workspace crates.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    /// `normal`, `dev` or `build`, as cargo names them.
    kind: String,
}

/// Why `from -> to` breaks the layering, or `None` if the table allows it.
fn layering_violation(from: &str, to: &str) -> Option<String> {
    let unknown = |name: &str| {
        format!("workspace crate `{name}` is not in the layering table (LAYERS in iouring-storage/tests/tidy.rs): add it there, at its place in STYLE.md's picture")
    };
    let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == from) else {
        return Some(unknown(from));
    };
    if !LAYERS.iter().any(|(name, _)| *name == to) {
        return Some(unknown(to));
    }
    if allowed.contains(&to) {
        return None;
    }
    let may = if allowed.is_empty() {
        "no workspace crate".to_owned()
    } else {
        format!("only {}", allowed.join(", "))
    };
    Some(format!(
        "`{from}` must not depend on `{to}`: it may depend on {may} (a crate depends only on crates below it; siblings never depend on each other)"
    ))
}

/// Every layering problem in the workspace: unknown members and edges the table does not allow.
fn layering_violations(members: &[String], edges: &[Edge]) -> Vec<String> {
    let mut problems: Vec<String> = members
        .iter()
        .filter(|m| !LAYERS.iter().any(|(name, _)| name == m))
        .map(|m| layering_violation(m, m).expect("an unknown crate is a violation whatever it depends on"))
        .collect();
    for e in edges {
        if !members.contains(&e.from) || !members.contains(&e.to) {
            continue;
        }
        if let Some(why) = layering_violation(&e.from, &e.to) {
            problems.push(format!("{} ({} dependency)", why, e.kind));
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// True if a Cargo.toml inherits the workspace lints: a `[lints]` table with `workspace = true`,
/// or the dotted (`lints.workspace = true`) or inline (`lints = { workspace = true }`) forms.
/// A line scan, not a TOML parser: enough for the manifests we write, and strict enough that a
/// missing or false setting is caught.
fn inherits_workspace_lints(manifest: &str) -> bool {
    let squash = |line: &str| -> String {
        let code = line.split('#').next().unwrap_or("");
        code.chars().filter(|c| !c.is_whitespace()).collect()
    };
    let mut table = String::new();
    for line in manifest.lines().map(squash) {
        if line.starts_with('[') {
            table = line;
            continue;
        }
        let found = match table.as_str() {
            "[lints]" => line == "workspace=true",
            "" => line == "lints.workspace=true" || line == "lints={workspace=true}",
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

/// The workspace as `cargo metadata` describes it: members (name, manifest path) and the
/// declared dependencies between them.
fn workspace() -> (Vec<(String, PathBuf)>, Vec<Edge>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running `{cargo} metadata`: {e}"));
    assert!(
        output.status.success(),
        "`{cargo} metadata` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let member_ids: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members is an array")
        .iter()
        .map(|id| id.as_str().expect("package ids are strings"))
        .collect();
    let packages: Vec<&Value> = metadata["packages"]
        .as_array()
        .expect("packages is an array")
        .iter()
        .filter(|p| member_ids.contains(p["id"].as_str().expect("package id")))
        .collect();
    let members: Vec<(String, PathBuf)> = packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("package name").to_owned();
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest path"));
            (name, manifest)
        })
        .collect();
    let names: BTreeSet<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
    let mut edges = Vec::new();
    for p in &packages {
        for d in p["dependencies"].as_array().expect("dependencies is an array") {
            // `name` is the package's own name even when the dependency is renamed. A crate of
            // the same name from a registry or git is not a workspace edge.
            let to = d["name"].as_str().expect("dependency name");
            if d["source"].is_null() && names.contains(to) {
                edges.push(Edge {
                    from: p["name"].as_str().expect("package name").to_owned(),
                    to: to.to_owned(),
                    kind: d["kind"].as_str().unwrap_or("normal").to_owned(),
                });
            }
        }
    }
    (members, edges)
}

#[test]
fn workspace_crates_follow_the_layering() {
    let (members, edges) = workspace();
    assert!(
        members.iter().any(|(n, _)| n == "iouring-storage"),
        "cargo metadata did not list this crate: the check would prove nothing"
    );
    let names: Vec<String> = members.into_iter().map(|(n, _)| n).collect();
    let problems = layering_violations(&names, &edges);
    assert!(problems.is_empty(), "layering violations:\n  {}", problems.join("\n  "));
}

#[test]
fn every_member_inherits_the_workspace_lints() {
    let (members, _) = workspace();
    let missing: Vec<String> = members
        .iter()
        .filter(|(_, manifest)| !inherits_workspace_lints(&read(manifest)))
        .map(|(name, manifest)| format!("{name} ({})", manifest.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "these crates do not set `[lints] workspace = true` in their Cargo.toml:\n  {}",
        missing.join("\n  ")
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The only files, relative to the workspace root, that may opt out of the workspace's
/// `unsafe_code = "deny"`, and why. Adding one is a decision to review, not a formality.
const UNSAFE_ALLOWED: &[(&str, &str)] = &[(
    "broker/src/alloc.rs",
    "the global allocator: huge allocations become mmap(MAP_NORESERVE) reservations, so a hostile array count cannot abort the broker",
)];

/// True if a line is an attribute that mentions the `unsafe_code` lint: `#![allow(unsafe_code)]`,
/// `#[allow(..., unsafe_code)]`, `expect`, `warn`, `cfg_attr(...)`: any of them opts out of "deny".
fn opts_out_of_unsafe_lint(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with("#![") || t.starts_with("#[")) && t.contains("unsafe_code")
}

/// The problems with `unsafe` in one file's source: a `// SAFETY:` comment missing above an
/// `unsafe` block or impl, a `# Safety` section missing from an `unsafe fn`'s doc comment.
/// A line scan over rustfmt-formatted code, not a parser.
fn unsafe_without_justification(source: &str) -> Vec<String> {
    let lines: Vec<&str> = source.lines().collect();
    let comment_block_above = |i: usize| -> Vec<&str> {
        lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim_start())
            .take_while(|l| l.starts_with("//") || l.starts_with("#["))
            .collect()
    };
    let mut problems = Vec::new();
    let mut in_unsafe_impl = false;
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        if line.starts_with('}') {
            in_unsafe_impl = false;
        }
        let is_block = code.contains("unsafe {");
        let is_impl = code.starts_with("unsafe impl") || code.contains(" unsafe impl");
        let is_fn = code.contains("unsafe fn ");
        if (is_block || is_impl) && !comment_block_above(i).iter().any(|l| l.starts_with("// SAFETY:")) {
            problems.push(format!("line {}: `unsafe` without a `// SAFETY:` comment above it", i + 1));
        }
        if is_impl {
            in_unsafe_impl = true;
        }
        if is_fn && !in_unsafe_impl && !comment_block_above(i).iter().any(|l| l.starts_with("/// # Safety")) {
            problems.push(format!(
                "line {}: `unsafe fn` without a `# Safety` section in its doc comment",
                i + 1
            ));
        }
    }
    problems
}

/// Every `.rs` file under `dir`, skipping build output and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_root() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running `{cargo} metadata`: {e}"));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    PathBuf::from(metadata["workspace_root"].as_str().expect("workspace_root"))
}

#[test]
fn unsafe_code_is_denied_and_allowed_only_where_listed() {
    let root = workspace_root();
    let manifest = read(&root.join("Cargo.toml"));
    let lint = manifest
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").replace(' ', ""))
        .find(|l| l.starts_with("unsafe_code="))
        .expect("the root Cargo.toml sets the unsafe_code lint");
    assert!(
        lint == "unsafe_code=\"deny\"" || lint == "unsafe_code=\"forbid\"",
        "the workspace's unsafe_code lint must be deny or forbid, found `{lint}`"
    );
    let (members, _) = workspace();
    let mut files = Vec::new();
    for (_, manifest) in &members {
        rust_files(manifest.parent().expect("a manifest has a directory"), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("iouring-storage/tests/tidy.rs")),
        "the scan did not find this very file: it would prove nothing"
    );
    let mut problems = Vec::new();
    let mut opted_out = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap_or(file).to_string_lossy().replace('\\', "/");
        let source = read(file);
        if !source.lines().any(opts_out_of_unsafe_lint) {
            continue;
        }
        if UNSAFE_ALLOWED.iter().any(|(allowed, _)| *allowed == relative) {
            opted_out.insert(relative.clone());
            for p in unsafe_without_justification(&source) {
                problems.push(format!("{relative}: {p}"));
            }
        } else {
            problems.push(format!(
                "{relative} opts out of `unsafe_code = \"deny\"`, but is not in UNSAFE_ALLOWED (iouring-storage/tests/tidy.rs)"
            ));
        }
    }
    for (allowed, _) in UNSAFE_ALLOWED {
        if !opted_out.contains(*allowed) {
            problems.push(format!(
                "{allowed} is in UNSAFE_ALLOWED but does not opt out (or is gone): remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "unsafe code problems:\n  {}", problems.join("\n  "));
}

// The rule functions themselves, on hostile input, so the checks above demonstrably can fail.

fn edge(from: &str, to: &str, kind: &str) -> Edge {
    Edge {
        from: from.to_owned(),
        to: to.to_owned(),
        kind: kind.to_owned(),
    }
}

fn all_known() -> Vec<String> {
    LAYERS.iter().map(|(n, _)| (*n).to_owned()).collect()
}

#[test]
fn downward_edges_are_allowed() {
    for (from, to) in [
        ("tiering", "iouring-storage"),
        ("replication", "iouring-storage"),
        ("shard", "tiering"),
        ("shard", "replication"),
        ("shard", "iouring-storage"),
        ("broker", "shard"),
        ("broker", "iouring-storage"),
        ("perf", "broker"),
        ("bench-harness", "shard"),
    ] {
        assert_eq!(layering_violation(from, to), None, "{from} -> {to}");
    }
}

#[test]
fn storage_depending_on_shard_is_rejected() {
    let why = layering_violation("iouring-storage", "shard").expect("an upward edge must be rejected");
    assert!(why.contains("`iouring-storage` must not depend on `shard`"), "{why}");
    let problems = layering_violations(&all_known(), &[edge("iouring-storage", "shard", "normal")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn upward_sibling_and_self_edges_are_rejected() {
    for (from, to) in [
        ("iouring-storage", "tiering"),
        ("iouring-storage", "broker"),
        ("tiering", "replication"),
        ("replication", "tiering"),
        ("tiering", "shard"),
        ("shard", "broker"),
        ("broker", "perf"),
        ("shard", "bench-harness"),
        ("perf", "bench-harness"),
        ("bench-harness", "perf"),
        ("shard", "shard"),
    ] {
        assert!(layering_violation(from, to).is_some(), "{from} -> {to} must be rejected");
    }
}

#[test]
fn dev_dependencies_obey_the_same_rules() {
    let problems = layering_violations(&all_known(), &[edge("iouring-storage", "bench-harness", "dev")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("(dev dependency)"), "{problems:?}");
}

#[test]
fn unknown_crates_are_rejected_with_a_hint() {
    let mut members = all_known();
    members.push("gateway".to_owned());
    let problems = layering_violations(&members, &[edge("gateway", "iouring-storage", "normal")]);
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.contains("`gateway` is not in the layering table") && p.contains("add it")),
        "{problems:?}"
    );
    assert!(layering_violation("shard", "gateway").is_some());
}

#[test]
fn edges_to_crates_outside_the_workspace_are_ignored() {
    // Only the members cargo listed count: e.g. a registry crate that happens to share a name.
    let members = vec!["iouring-storage".to_owned()];
    assert!(layering_violations(&members, &[edge("iouring-storage", "shard", "normal")]).is_empty());
}

#[test]
fn lint_inheritance_is_recognised_in_its_three_forms() {
    assert!(inherits_workspace_lints("[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"));
    assert!(inherits_workspace_lints(
        "[lints]\n  workspace=true   # inherit\n[[bench]]\nname = \"m\"\n"
    ));
    assert!(inherits_workspace_lints("lints.workspace = true\n[package]\nname = \"x\"\n"));
    assert!(inherits_workspace_lints("lints = { workspace = true }\n[package]\n"));
}

#[test]
fn missing_or_false_lint_inheritance_is_caught() {
    assert!(!inherits_workspace_lints("[package]\nname = \"x\"\n"));
    assert!(!inherits_workspace_lints("[lints]\nworkspace = false\n"));
    assert!(!inherits_workspace_lints("[lints]\n# workspace = true\n"));
    // In another table it means something else.
    assert!(!inherits_workspace_lints(
        "[package]\nworkspace = true\n[lints.rust]\nunsafe_code = \"forbid\"\n"
    ));
    assert!(!inherits_workspace_lints("[lints.clippy]\nworkspace = true\n"));
    // `[lints]` followed by a different table before the setting.
    assert!(!inherits_workspace_lints("[lints]\n[dependencies]\nworkspace = true\n"));
}

#[test]
fn every_form_of_opting_out_of_the_unsafe_lint_is_seen() {
    for line in [
        "#![allow(unsafe_code)]",
        "    #[allow(unsafe_code)]",
        "#[allow(dead_code, unsafe_code)]",
        "#![expect(unsafe_code)]",
        "#![warn(unsafe_code)]",
        "#![cfg_attr(test, allow(unsafe_code))]",
    ] {
        assert!(opts_out_of_unsafe_lint(line), "{line}");
    }
    for line in [
        "// #![allow(unsafe_code)]",
        "let s = \"#![allow(unsafe_code)]\";",
        "#![allow(dead_code)]",
    ] {
        assert!(!opts_out_of_unsafe_lint(line), "{line}");
    }
}

#[test]
fn unsafe_without_a_safety_comment_is_caught() {
    let justified = "fn f() {\n    // SAFETY: p is valid.\n    let x = unsafe { *p };\n}\n\n// SAFETY: the contract holds.\nunsafe impl GlobalAlloc for A {\n    unsafe fn alloc(&self) {}\n}\n\n/// Frees.\n///\n/// # Safety\n/// p is ours.\nunsafe fn release(p: *mut u8) {}\n";
    assert_eq!(unsafe_without_justification(justified), Vec::<String>::new());
    let bare_block = "fn f() {\n    let x = unsafe { *p };\n}\n";
    assert_eq!(unsafe_without_justification(bare_block).len(), 1);
    // A comment that is not a SAFETY comment, or one separated by code, does not count.
    let wrong_comment = "// Reads p.\nlet x = unsafe { *p };\n";
    assert_eq!(unsafe_without_justification(wrong_comment).len(), 1);
    let separated = "// SAFETY: p is valid.\nlet y = 1;\nlet x = unsafe { *p };\n";
    assert_eq!(unsafe_without_justification(separated).len(), 1);
    let bare_impl = "unsafe impl Send for A {}\n";
    assert_eq!(unsafe_without_justification(bare_impl).len(), 1);
    let undocumented_fn = "/// Frees.\nunsafe fn release(p: *mut u8) {}\n";
    assert_eq!(unsafe_without_justification(undocumented_fn).len(), 1);
    // After an unsafe impl ends, its exemption for methods ends too.
    let after_impl = "// SAFETY: ok.\nunsafe impl Send for A {\n}\nunsafe fn loose() {}\n";
    assert_eq!(unsafe_without_justification(after_impl).len(), 1);
}
