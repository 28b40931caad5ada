//! Error messages that point at the line: a key path (`a.b[0].c`) found in
//! the YAML text it came from.

/// Appends ` at line N` to a validation error `key.path: message` when the
/// key is found in the YAML text.
pub fn with_line(text: &str, e: &str) -> String {
    match e.split_once(": ").and_then(|(path, _)| locate(text, path)) {
        Some(line) => format!("{e} at line {line}"),
        None => e.to_string(),
    }
}

/// One step of a key path: a map key or a sequence index.
enum Seg<'a> {
    Key(&'a str),
    Idx(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, idx) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        for i in idx.split('[') {
            if let Ok(n) = i.trim_end_matches(']').parse() {
                out.push(Seg::Idx(n));
            }
        }
    }
    out
}

/// The 1-based line of a key path in block-style YAML (the line of the
/// deepest key found: a key inside a flow mapping `{a: 1}` gives the line of
/// that mapping). A heuristic for error messages, never for meaning.
fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let skip = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    // the region of the current node: lines [start, end), entries deeper than `col`
    let (mut start, mut end, mut col) = (0usize, lines.len(), -1isize);
    let mut found = None;
    for seg in segments(path) {
        let region = (start..end).filter(|&i| !skip(lines[i]));
        let hit = match seg {
            Seg::Key(k) => {
                // (line, column of its key, the text from the key on)
                let keys: Vec<(usize, isize, &str)> = region
                    .map(|i| {
                        let body = lines[i].trim_start().trim_start_matches("- ").trim_start();
                        (i, (lines[i].len() - body.len()) as isize, body)
                    })
                    .filter(|(_, c, _)| *c > col)
                    .collect();
                let level = keys.iter().map(|(_, c, _)| *c).min();
                keys.into_iter()
                    .find(|(_, c, body)| {
                        Some(*c) == level
                            && body
                                .strip_prefix(k)
                                .is_some_and(|r| r.trim_start().starts_with(':'))
                    })
                    .map(|(i, c, _)| (i, c, i + 1))
            }
            Seg::Idx(n) => {
                let dashes: Vec<usize> = region
                    .filter(|&i| lines[i].trim_start().starts_with('-'))
                    .collect();
                let d = dashes.iter().map(|&i| indent(lines[i])).min();
                dashes
                    .into_iter()
                    .filter(|&i| Some(indent(lines[i])) == d)
                    .nth(n)
                    .map(|i| (i, indent(lines[i]) as isize, i))
            }
        };
        let Some((line, c, next)) = hit else { break };
        found = Some(line + 1);
        // the node runs until a line at its own level or shallower
        let stop = (line + 1..end)
            .find(|&i| {
                let l = lines[i];
                !skip(l)
                    && ((indent(l) as isize) < c
                        || (indent(l) as isize == c
                            && (matches!(seg, Seg::Idx(_)) || !l.trim_start().starts_with('-'))))
            })
            .unwrap_or(end);
        (start, end, col) = (next, stop, c);
    }
    found
}
