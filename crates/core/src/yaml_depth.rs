//! A bound on how deeply a YAML text nests, checked before any tree is
//! built.
//!
//! serde_norway (libyaml) reads a whole document before deserializing it,
//! and a config of 100,000 nested `[` took half a minute to refuse. This
//! check streams the text through `saphyr-parser`'s event parser and stops
//! at the first collection past the limit, so it reads at most what lies
//! before that point, once: linear in the text, whatever the text.
//! Aliases count with the depth of what they name, as serde would expand
//! them.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use crate::error::YamlDepthError;

/// The deepest nesting of lists and mappings a config file may have. A
/// Warden config needs about six (`rules[0].match.resource`, a `set` value
/// a few levels deep); 64 leaves room for any real one.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// Checks that no list or mapping in `text` (any document of it) is nested
/// more than `max` deep; the top-level mapping of a config is depth 1.
///
/// Also refuses what the YAML scanner cannot read (a syntax error, or its
/// own bound of 255 nested flow collections), naming the line and column.
pub fn check_depth(text: &str, max: usize) -> Result<(), YamlDepthError> {
    // Per open collection: its anchor (0 for none) and the height of its
    // highest child so far.
    let mut open: Vec<(usize, usize)> = Vec::new();
    // Per open collection: for a mapping, whether its next node is a key,
    // and the scalar keys seen with their lines; `None` for a sequence.
    let mut keys: Vec<Option<(bool, HashMap<String, usize>)>> = Vec::new();
    // Anchor id -> height of the node it names.
    let mut heights: HashMap<usize, usize> = HashMap::new();
    let too_deep = |span: Span| YamlDepthError::TooDeep {
        line: span.start.line(),
        col: span.start.col() + 1,
        max,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let (line, col) = (e.marker().line(), e.marker().col() + 1);
            if e.info() == "recursion limit exceeded" {
                YamlDepthError::TooDeep { line, col, max }
            } else {
                YamlDepthError::Syntax {
                    line,
                    col,
                    message: e.info().to_owned(),
                }
            }
        })?;
        // A node completes: in a mapping, keys and values alternate.
        let completes = !matches!(
            event,
            Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::StreamStart
                | Event::StreamEnd
                | Event::DocumentStart(_)
                | Event::DocumentEnd
                | Event::Nothing
        );
        if completes {
            if let Some(Some((is_key, seen))) = keys.last_mut() {
                if *is_key {
                    if let Event::Scalar(key, ..) = &event {
                        let line = span.start.line();
                        if let Some(first_line) = seen.insert(key.to_string(), line) {
                            if key.as_ref() != "<<" {
                                return Err(YamlDepthError::DuplicateKey {
                                    key: key.chars().take(60).collect(),
                                    first_line,
                                    line,
                                });
                            }
                        }
                    }
                }
                *is_key = !*is_key;
            }
        }
        let height = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= max {
                    return Err(too_deep(span));
                }
                open.push((anchor, 0));
                keys.push(match event {
                    Event::MappingStart(..) => Some((true, HashMap::new())),
                    _ => None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                keys.pop();
                let Some((anchor, below)) = open.pop() else {
                    continue;
                };
                // The collection itself completes a key or value of its parent.
                if let Some(Some((is_key, _))) = keys.last_mut() {
                    *is_key = !*is_key;
                }
                if anchor != 0 {
                    heights.insert(anchor, below + 1);
                }
                below + 1
            }
            Event::Alias(id) => {
                let height = heights.get(&id).copied().unwrap_or(0);
                if open.len() + height > max {
                    return Err(too_deep(span));
                }
                height
            }
            _ => continue,
        };
        if let Some((_, below)) = open.last_mut() {
            *below = (*below).max(height);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_naming_both_lines() {
        let text = "teams:\n  ml:\n    max_nodes: 1\n  cv: {}\n  ml:\n    max_nodes: 8\n";
        assert_eq!(
            check_depth(text, MAX_CONFIG_DEPTH),
            Err(YamlDepthError::DuplicateKey {
                key: "ml".to_owned(),
                first_line: 2,
                line: 5
            })
        );
        // Top level, flow style, and a quoted spelling of the same key.
        assert!(check_depth("a: 1\nb: 2\na: 3\n", 8).is_err());
        assert!(check_depth("a: {x: 1, 'x': 2}\n", 8).is_err());
        // The same key in different mappings, keys that are collections,
        // values equal to keys, and merge keys are fine.
        assert_eq!(
            check_depth("a: {x: 1}\nb: {x: 1}\nc: [x, x]\nd: {x: x}\n", 8),
            Ok(())
        );
        assert_eq!(check_depth("? [a]\n: 1\n? [a, b]\n: 2\nz: 1\n", 8), Ok(()));
        assert_eq!(
            check_depth("b: &b {x: 1}\nc:\n  <<: *b\n  <<: *b\n", 8),
            Ok(())
        );
        assert_eq!(check_depth("a:\n  b: {k: 1}\n  k: 2\nk: 3\n", 8), Ok(()));
    }

    fn flow(depth: usize) -> String {
        format!("teams: {}{}\n", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn the_limit_counts_every_list_and_mapping() {
        // The top-level mapping is depth 1, each `[` one more.
        assert_eq!(check_depth(&flow(63), 64), Ok(()));
        assert_eq!(
            check_depth(&flow(64), 64),
            Err(YamlDepthError::TooDeep {
                line: 1,
                col: 71,
                max: 64
            })
        );
        assert_eq!(check_depth("a: {b: {c: [1]}}\n", 4), Ok(()));
        assert!(check_depth("a: {b: {c: [1]}}\n", 3).is_err());
        assert_eq!(check_depth("", 1), Ok(()));
        assert_eq!(check_depth("just a scalar", 0), Ok(()));
    }

    #[test]
    fn a_deep_flow_text_is_refused() {
        let e = check_depth(&flow(100_000), MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::TooDeep { line: 1, .. }), "{e}");
        let text = format!("teams: {}\n", "{a: ".repeat(100_000));
        let e = check_depth(&text, MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::TooDeep { line: 1, .. }), "{e}");
        // One bracket a line. The scanner looks ahead past nested flow
        // collections (a flow collection may turn out to be a mapping key)
        // up to its own bound of 255, so the place named is at most there.
        let text = format!("teams:\n{}", " [\n".repeat(100_000));
        match check_depth(&text, MAX_CONFIG_DEPTH) {
            Err(YamlDepthError::TooDeep {
                line,
                col: 2,
                max: 64,
            }) => {
                assert!((65..=258).contains(&line), "line {line}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deep_block_text_is_refused() {
        let text = format!("teams:\n  {}x\n", "- ".repeat(100_000));
        let e = check_depth(&text, MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::TooDeep { line: 2, .. }), "{e}");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let e = check_depth(&text, MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::TooDeep { line: 65, .. }), "{e}");
    }

    /// An alias is as deep as what it names, wherever it is used.
    #[test]
    fn aliases_count_with_their_depth() {
        let anchored = format!("a: &x {}{}\n", "[".repeat(40), "]".repeat(40));
        assert_eq!(check_depth(&anchored, MAX_CONFIG_DEPTH), Ok(()));
        let used = format!("{anchored}b: {}*x{}\n", "[".repeat(30), "]".repeat(30));
        let e = check_depth(&used, MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::TooDeep { line: 2, .. }), "{e}");
        let shallow = format!("{anchored}b: {}*x{}\n", "[".repeat(20), "]".repeat(20));
        assert_eq!(check_depth(&shallow, MAX_CONFIG_DEPTH), Ok(()));
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let e = check_depth("a: [1, 2\nb: 3\n", MAX_CONFIG_DEPTH).unwrap_err();
        assert!(matches!(e, YamlDepthError::Syntax { .. }), "{e}");
        assert!(e.to_string().starts_with("line "), "{e}");
    }
}
