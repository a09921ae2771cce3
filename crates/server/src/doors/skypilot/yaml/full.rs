//! The general YAML reader: every document the fast path leaves out.
//!
//! `saphyr-parser` (a streaming YAML parser) turns the text into events;
//! this module builds the [`Node`] PyYAML's `safe_load` would build from
//! them: plain scalars resolved by PyYAML's YAML 1.1 rules, explicit tags
//! checked against what `safe_load` can construct, aliases expanded, merge
//! keys flattened, unhashable keys refused, and only the first document
//! kept (SkyPilot reads the first of `safe_load_all`; the others must
//! still parse).
//!
//! Bounds, checked while the events stream in, before anything deeper is
//! built: nesting past [`MAX_DEPTH`] and more than [`MAX_NODES`] nodes
//! (aliases count every time they are expanded) are refused. The
//! parser itself reads in linear time and stops at the first error.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::node::{Node, Scalar};
use super::resolve::{constructs, resolve_plain, Kind};

/// The deepest nesting of lists and mappings a document may have.
pub const MAX_DEPTH: usize = 64;

/// The most nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 200_000;

/// Why a document cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (line {line}, column {col})")]
pub struct YamlError {
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

fn err(span: Span, message: impl Into<String>) -> YamlError {
    YamlError {
        message: message.into(),
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

enum Open {
    Seq(Vec<Node>, Option<String>, usize),
    /// Entries, a pending key, the tag, the anchor id.
    Map(Vec<(Node, Node)>, Option<Node>, Option<String>, usize),
}

/// Parses the first document of `text` (an empty stream is `None`).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut first: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError {
            message: e.info().to_owned(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
        })?;
        let done: Option<(Node, usize)> = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                None
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = collection_tag(span, tag.as_deref(), false)?;
                push(&mut stack, Open::Seq(Vec::new(), tag, anchor), span)?;
                None
            }
            Event::MappingStart(anchor, tag) => {
                let tag = collection_tag(span, tag.as_deref(), true)?;
                push(&mut stack, Open::Map(Vec::new(), None, tag, anchor), span)?;
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items, tag, anchor)) => {
                    Some((tagged(tag, Node::Seq(items)), anchor))
                }
                _ => return Err(err(span, "unbalanced sequence end")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(entries, None, tag, anchor)) => Some((
                    tagged(tag, Node::Map(flatten_merges(entries, span)?)),
                    anchor,
                )),
                _ => return Err(err(span, "unbalanced mapping end")),
            },
            Event::Scalar(value, style, anchor, tag) => {
                let in_key = matches!(stack.last(), Some(Open::Map(_, None, _, _)));
                Some((
                    Node::Scalar(scalar(span, &value, style, tag.as_deref(), in_key)?),
                    anchor,
                ))
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err(span, "alias to an unknown anchor"))?;
                nodes += count(&node);
                Some((node, 0))
            }
            _ => None,
        };
        let Some((node, anchor)) = done else {
            continue;
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(err(
                span,
                format!("the document has more than {MAX_NODES} nodes (aliases count each time they are used)"),
            ));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            Some(Open::Seq(items, ..)) => items.push(node),
            Some(Open::Map(entries, key, ..)) => match key.take() {
                None => {
                    if matches!(node, Node::Seq(_) | Node::Map(_) | Node::Tagged(..)) {
                        return Err(err(
                            span,
                            "a mapping key is a list or a mapping, which PyYAML cannot use as a key",
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
            None => {
                if documents == 1 {
                    first = Some(node);
                }
            }
        }
    }
    Ok(first)
}

fn push(stack: &mut Vec<Open>, open: Open, span: Span) -> Result<(), YamlError> {
    if stack.len() >= MAX_DEPTH {
        return Err(err(
            span,
            format!("the document nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    stack.push(open);
    Ok(())
}

fn count(node: &Node) -> usize {
    match node {
        Node::Scalar(_) => 1,
        Node::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Node::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
        Node::Tagged(_, inner) => count(inner),
    }
}

fn tagged(tag: Option<String>, node: Node) -> Node {
    match tag {
        Some(t) => Node::Tagged(t.into_boxed_str(), Box::new(node)),
        None => node,
    }
}

fn full_tag(tag: &saphyr_parser::Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// The tag a collection keeps: `None` for the default (`!!seq`, `!!map`,
/// the non-specific `!`); `!!set`, `!!omap` and `!!pairs` are kept.
fn collection_tag(
    span: Span,
    tag: Option<&saphyr_parser::Tag>,
    mapping: bool,
) -> Result<Option<String>, YamlError> {
    let Some(tag) = tag else {
        return Ok(None);
    };
    let full = full_tag(tag);
    match full.as_str() {
        "!" => Ok(None),
        "tag:yaml.org,2002:seq" if !mapping => Ok(None),
        "tag:yaml.org,2002:map" if mapping => Ok(None),
        "tag:yaml.org,2002:set" if mapping => Ok(Some(full)),
        "tag:yaml.org,2002:omap" | "tag:yaml.org,2002:pairs" if !mapping => Ok(Some(full)),
        _ => Err(unsupported_tag(span, &full)),
    }
}

fn unsupported_tag(span: Span, full: &str) -> YamlError {
    let shown = full
        .strip_prefix("tag:yaml.org,2002:")
        .map_or_else(|| full.to_owned(), |s| format!("!!{s}"));
    err(
        span,
        format!("tag `{shown}` is not one SkyPilot's YAML loader (PyYAML `safe_load`) can read here; remove it"),
    )
}

fn scalar(
    span: Span,
    value: &str,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    in_key: bool,
) -> Result<Scalar, YamlError> {
    let kind = match tag {
        Some(t) => {
            let full = full_tag(t);
            if full == "!" {
                // PyYAML resolves a scalar tagged `!` as if it were plain,
                // whatever its style (libyaml writes dates as `! '2001-12-14'`).
                resolve_plain(value)
            } else {
                Kind::from_tag(&full).ok_or_else(|| unsupported_tag(span, &full))?
            }
        }
        None if style == ScalarStyle::Plain => resolve_plain(value),
        None => Kind::Str,
    };
    let valid = match kind {
        Kind::Value => in_key,
        kind => constructs(kind, value),
    };
    if !valid {
        return Err(err(
            span,
            format!(
                "`{}` cannot be read as {}",
                value.chars().take(40).collect::<String>(),
                kind.tag().trim_start_matches("tag:yaml.org,2002:")
            ),
        ));
    }
    // PyYAML reads a `=` key as the string "=".
    let kind = if kind == Kind::Value { Kind::Str } else { kind };
    Ok(Scalar {
        text: value.to_owned(),
        kind,
    })
}

/// PyYAML's `flatten_mapping`: `<<: MAP` and `<<: [MAP, ...]` put the
/// merged mappings' entries before the mapping's own.
fn flatten_merges(entries: Vec<(Node, Node)>, span: Span) -> Result<Vec<(Node, Node)>, YamlError> {
    let is_merge = |k: &Node| {
        matches!(
            k,
            Node::Scalar(Scalar {
                kind: Kind::Merge,
                ..
            })
        )
    };
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return Ok(entries);
    }
    let mut merged = Vec::new();
    let mut own = Vec::new();
    for (k, v) in entries {
        if !is_merge(&k) {
            own.push((k, v));
            continue;
        }
        match v {
            Node::Map(m) => merged.extend(m),
            Node::Seq(items) => {
                for item in items {
                    match item {
                        Node::Map(m) => merged.extend(m),
                        _ => return Err(err(span, "expected a mapping for merging (`<<`)")),
                    }
                }
            }
            _ => {
                return Err(err(
                    span,
                    "expected a mapping or list of mappings for merging (`<<`)",
                ))
            }
        }
    }
    merged.extend(own);
    Ok(merged)
}
