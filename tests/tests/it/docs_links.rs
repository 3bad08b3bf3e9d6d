//! Every relative link of the repository's Markdown files resolves: the file (or directory)
//! exists, and an `#anchor` (in the same file or in `other.md#anchor`) is the GitHub slug of
//! one of the target's headings. External links (`https:`, `mailto:`...) are not followed.
//!
//! A hand parser, enough for the Markdown this repository writes: ATX headings, inline links
//! and images `[text](target "title")`, reference definitions `[label]: target`, fenced code
//! blocks and inline code spans (whose contents are not links).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// The Markdown files checked: every `*.md` under the repository root, outside `target/`
/// and hidden directories.
fn markdown_files(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
            } else if name.ends_with(".md") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                files.insert(relative, text);
            }
        }
    }
    files
}

/// Lines outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        if let Some(c) = marker {
            let run = trimmed.chars().take_while(|x| *x == c).count();
            if run >= 3 {
                match fence {
                    None => {
                        fence = Some((c, run));
                        continue;
                    }
                    Some((open, len)) if open == c && run >= len && trimmed[run..].trim().is_empty() => {
                        fence = None;
                        continue;
                    }
                    Some(_) => {}
                }
            }
        }
        if fence.is_none() {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// The line without its inline code spans (`` `x` ``, ``` ``x`` ```), each replaced by one
/// space.
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '`' {
            let run = chars[i..].iter().take_while(|c| **c == '`').count();
            // Find the closing run of the same length.
            let mut j = i + run;
            let mut closed = None;
            while j < chars.len() {
                if chars[j] == '`' {
                    let r = chars[j..].iter().take_while(|c| **c == '`').count();
                    if r == run {
                        closed = Some(j + r);
                        break;
                    }
                    j += r;
                } else {
                    j += 1;
                }
            }
            match closed {
                Some(end) => {
                    out.push(' ');
                    i = end;
                }
                None => {
                    out.extend(&chars[i..i + run]);
                    i += run;
                }
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// GitHub's anchor for a heading: the rendered text lowercased, every character that is not
/// a letter, a digit, a space, `-` or `_` removed, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let text = without_code_spans_keep_text(heading);
    let text = link_texts(&text);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Code spans keep their text in a heading's slug (only the backticks go).
fn without_code_spans_keep_text(text: &str) -> String {
    text.replace('`', "")
}

/// `[text](target)` → `text`, for headings that hold links.
fn link_texts(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](") {
            Some(close) => match after[close + 2..].find(')') {
                Some(end) => {
                    out.push_str(&after[..close]);
                    rest = &after[close + 2 + end + 1..];
                }
                None => {
                    out.push('[');
                    rest = after;
                }
            },
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The anchors of a Markdown text: the slugs of its ATX headings, with GitHub's `-1`, `-2`
/// suffixes for repeats.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = HashSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) {
            continue;
        }
        let rest = &trimmed[level..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
            continue;
        }
        // A closing sequence of `#`s is not part of the heading.
        let title = rest.trim().trim_end_matches('#').trim_end();
        let base = slug(title);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        out.insert(anchor);
    }
    out
}

/// The link targets of a Markdown text, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        // Reference definitions: `[label]: target`.
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find("]:") {
                let target = trimmed[end + 2..].split_whitespace().next().unwrap_or("");
                out.push((number, target.trim_matches(['<', '>']).to_string()));
                continue;
            }
        }
        // Inline links and images: `](target)` after a `[`.
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(found) = line[i..].find("](") {
            let start = i + found + 2;
            let mut depth = 0usize;
            let mut end = None;
            for (k, b) in bytes[start..].iter().enumerate() {
                match b {
                    b'(' => depth += 1,
                    b')' if depth == 0 => {
                        end = Some(start + k);
                        break;
                    }
                    b')' => depth -= 1,
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            let inner = line[start..end].trim();
            let target = if let Some(stripped) = inner.strip_prefix('<') {
                stripped.split('>').next().unwrap_or("")
            } else {
                // An optional title follows the target after a space.
                inner.split_whitespace().next().unwrap_or("")
            };
            out.push((number, target.to_string()));
            i = end;
        }
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system; `None` when it climbs out of the
/// root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every broken link of `files` (paths relative to the repository root), as
/// `file:line: target: reason`. `exists` answers for paths that are not Markdown files of
/// `files` (directories, sources, configs).
fn broken_links(files: &BTreeMap<PathBuf, String>, exists: impl Fn(&Path) -> bool) -> Vec<String> {
    let anchors_of: BTreeMap<&PathBuf, HashSet<String>> =
        files.iter().map(|(path, text)| (path, anchors(text))).collect();
    let mut problems = Vec::new();
    for (file, text) in files {
        for (line, target) in links(text) {
            let mut problem = |reason: String| {
                problems.push(format!("{}:{line}: {target}: {reason}", file.display()));
            };
            if target.is_empty() {
                problem("empty link".into());
                continue;
            }
            // A scheme (`https:`, `mailto:`) makes it external.
            if let Some(colon) = target.find(':') {
                if target[..colon]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                {
                    continue;
                }
            }
            let (path_part, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let linked = if path_part.is_empty() {
                file.clone()
            } else if path_part.starts_with('/') {
                problem("absolute path (use a relative link)".into());
                continue;
            } else {
                let joined = file.parent().unwrap_or(Path::new("")).join(path_part);
                match normalize(&joined) {
                    Some(p) => p,
                    None => {
                        problem("leaves the repository".into());
                        continue;
                    }
                }
            };
            let markdown = anchors_of.get(&linked);
            if markdown.is_none() && !exists(&linked) {
                problem(format!("{} does not exist", linked.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                match markdown {
                    Some(known) if known.contains(anchor) => {}
                    Some(_) => problem(format!(
                        "no heading of {} has the anchor #{anchor}",
                        linked.display()
                    )),
                    None => problem(format!(
                        "#{anchor} points into {}, which is not a Markdown file",
                        linked.display()
                    )),
                }
            }
        }
    }
    problems
}

#[test]
fn every_relative_link_and_anchor_of_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository");
    let files = markdown_files(root);
    for required in ["README.md", "ARCHITECTURE.md", "docs/README.md"] {
        assert!(
            files.contains_key(Path::new(required)),
            "{required} is missing; found {:?}",
            files.keys().collect::<Vec<_>>()
        );
    }
    let problems = broken_links(&files, |p| root.join(p).exists());
    assert!(
        problems.is_empty(),
        "broken links in the Markdown files:\n  {}",
        problems.join("\n  ")
    );
}

#[cfg(test)]
mod checker {
    use super::*;

    fn docs(pairs: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
        pairs
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect()
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(slug("Runbook: alerts"), "runbook-alerts");
        assert_eq!(slug("synapse's own answers"), "synapses-own-answers");
        assert_eq!(slug("http / https"), "http--https");
        assert_eq!(slug("`default_weight: 255`"), "default_weight-255");
        assert_eq!(slug("Routing (shared listeners)"), "routing-shared-listeners");
        assert_eq!(slug("See [the docs](docs/README.md) now"), "see-the-docs-now");
        assert_eq!(slug("Überblick 2"), "überblick-2");
    }

    #[test]
    fn repeated_headings_get_numbered_anchors() {
        let a = anchors("# Keys\n## Keys\n### Keys\n");
        assert!(a.contains("keys") && a.contains("keys-1") && a.contains("keys-2"));
    }

    #[test]
    fn good_links_pass() {
        let files = docs(&[
            ("README.md", "# Top\nSee [guide](docs/README.md#start), [top](#top), [src](src/lib.rs), <https://example.com>, [ext](https://example.com/x#y).\n"),
            ("docs/README.md", "# Start\n[back](../README.md#top) [`code`](../src/lib.rs)\n[ref]: ../README.md\n"),
        ]);
        let problems = broken_links(&files, |p| p == Path::new("src/lib.rs"));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_missing_file_fails() {
        let files = docs(&[("README.md", "# Top\nSee [guide](docs/missing.md).\n")]);
        let problems = broken_links(&files, |_| false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("README.md:2: docs/missing.md:"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_missing_anchor_fails_in_the_same_file_and_in_another() {
        let files = docs(&[
            (
                "README.md",
                "# Top\n[a](#nowhere) [b](docs/guide.md#keys) [c](docs/guide.md#key)\n",
            ),
            ("docs/guide.md", "# Guide\n## Keys\n"),
        ]);
        let problems = broken_links(&files, |_| false);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("#nowhere") && problems[1].contains("#key"),
            "{problems:?}"
        );
    }

    #[test]
    fn reference_definitions_and_climbing_out_are_checked() {
        let files = docs(&[("docs/a.md", "# A\n[x]: missing.md\n[y](../../outside.md)\n")]);
        let problems = broken_links(&files, |_| false);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn links_in_code_are_not_links() {
        let files = docs(&[(
            "README.md",
            "# A\n`[not](a-link.md)` and ``[nor](this.md)``\n```md\n[nor](that.md)\n# Not a heading\n```\n[yes](#a)\n",
        )]);
        assert!(broken_links(&files, |_| false).is_empty());
        assert!(!anchors(&files[Path::new("README.md")]).contains("not-a-heading"));
    }
}
