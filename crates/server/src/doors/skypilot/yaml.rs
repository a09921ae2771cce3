//! The SkyPilot door's YAML: read as PyYAML's `safe_load` reads it, written
//! back so that it reads back the same.
//!
//! SkyPilot reads Warden's answer with PyYAML's safe loader (YAML 1.1), so
//! the contract is: *what PyYAML reads from Warden's answer is what it reads
//! from the user's document, plus Warden's changes.* [`Node`] keeps what
//! that needs (scalar text and kind, key order, keys of every kind);
//! [`resolve`] types plain scalars by PyYAML's rules; [`emit`] writes flow
//! YAML that reads back the same. A differential test against the real
//! PyYAML (`tests/client/yaml_contract.py`, run by `scripts/test`) holds
//! the whole path to it.
//!
//! Reading has two paths. SkyPilot writes `task`, `skypilot_config` and
//! `user` in PyYAML's block style (`yaml.dump(..., default_flow_style=False)`):
//! indented mappings, `- ` sequences, plain scalars, single- or
//! double-quoted scalars that may span lines, and `{}` / `[]`. [`parse`]
//! reads that subset directly (the general parser costs more than every
//! other step of a decision together); whenever the text strays outside it
//! (comments, anchors, aliases, tags, block scalars, flow collections other
//! than `{}`/`[]`, tabs, `\r`, document markers, unusual keys, multi-line
//! plain scalars, nesting past [`MAX_DEPTH`], ...) the general reader
//! ([`full`]) takes over and writes every error message. A differential
//! test (`tests` below) checks that both give the same tree whenever the
//! fast path answers.

mod emit;
mod full;
mod node;
mod resolve;

pub use emit::to_string;
pub use full::{YamlError, MAX_DEPTH, MAX_NODES};
pub use node::{float_text, map_get, Node, Scalar};
pub use resolve::{bool_value, float_value, int_value, Kind};

/// Reads the first document of `text` as PyYAML's `safe_load_all(...)[0]`
/// does; an empty document is `None` (null).
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    match fast(text) {
        Some(node) => Ok(Some(node)),
        None => full::parse(text),
    }
}

/// The fast path: `Some` only for the block-style subset described above.
fn fast(text: &str) -> Option<Node> {
    if !plain_characters(text) {
        return None;
    }
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
        line_start: 0,
        col: 0,
        eof: false,
        depth: 0,
    };
    p.next_line()?;
    if p.eof {
        return None;
    }
    let value = p.block_node(p.col)?;
    // The whole document must have been one node.
    p.eof.then_some(value)
}

/// Printable characters only, no tab, no carriage return, no byte-order mark.
fn plain_characters(text: &str) -> bool {
    if text.is_ascii() {
        // No early exit, so the loop vectorizes.
        return text.bytes().fold(true, |ok, b| {
            ok & ((b' '..=b'~').contains(&b) | (b == b'\n'))
        });
    }
    text.chars().all(|c| {
        c == '\n'
            || (' '..='~').contains(&c)
            || (c >= '\u{a0}'
                && !matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ))
    })
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    /// Where the line holding `pos` starts.
    line_start: usize,
    /// After [`Parser::next_line`]: the column of the next content line.
    col: usize,
    /// After [`Parser::next_line`]: no content line is left.
    eof: bool,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.s.get(i).copied()
    }

    fn text(&self, from: usize, to: usize) -> Option<&'a str> {
        std::str::from_utf8(self.s.get(from..to)?).ok()
    }

    /// From the start of a line: skips blank lines and stops at the first
    /// content character of the next line (`col`), or sets `eof`. `None`
    /// (give up) at a comment line.
    fn next_line(&mut self) -> Option<()> {
        loop {
            let start = self.pos;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek() {
                None => {
                    self.eof = true;
                    return Some(());
                }
                Some(b'\n') => self.pos += 1,
                Some(b'#') => return None,
                Some(_) => {
                    self.line_start = start;
                    self.col = self.pos - start;
                    return Some(());
                }
            }
        }
    }

    /// Skips spaces to the end of the line and past it, then to the next
    /// content line. `None` if anything else is left on the line.
    fn end_line(&mut self) -> Option<()> {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        match self.peek() {
            None => {}
            Some(b'\n') => self.pos += 1,
            Some(_) => return None,
        }
        self.next_line()
    }

    /// Whether the line at `pos` starts with a quoted key: a quote, and the
    /// line holds `': '` or ends with `':` (a guess, checked when parsed).
    fn quoted_key_follows(&self) -> bool {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        let line = rest.split(|c| *c == b'\n').next().unwrap_or_default();
        let q = line.first().copied().unwrap_or(b'\'');
        line.windows(3).any(|w| w == [q, b':', b' ']) || line.ends_with(&[q, b':'])
    }

    fn is_dash_item(&self) -> bool {
        self.peek() == Some(b'-') && matches!(self.at(self.pos + 1), None | Some(b' ' | b'\n'))
    }

    /// A block mapping or sequence whose first content is at `pos`, column `n`.
    fn block_node(&mut self, n: usize) -> Option<Node> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let v = if self.is_dash_item() {
            self.sequence(n)
        } else {
            self.mapping(n)
        };
        self.depth -= 1;
        v
    }

    /// The length of a simple key at `pos` (`[A-Za-z_][A-Za-z0-9_./-]*`)
    /// followed by `:` and a space or line end; 0 if there is none.
    fn key_len(&self) -> usize {
        let rest = self.s.get(self.pos..).unwrap_or_default();
        match rest.first() {
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
            _ => return 0,
        }
        let len = rest
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')))
            .unwrap_or(rest.len());
        let followed =
            rest.get(len) == Some(&b':') && matches!(rest.get(len + 1), None | Some(b' ' | b'\n'));
        if followed {
            len
        } else {
            0
        }
    }

    fn mapping(&mut self, n: usize) -> Option<Node> {
        let mut map = Vec::new();
        loop {
            let key = match self.peek() {
                Some(q @ (b'\'' | b'"')) => Node::str(self.quoted_key(n, q == b'"')?),
                _ => {
                    let len = self.key_len();
                    let key = self.text(self.pos, self.pos + len)?;
                    if len == 0 {
                        return None;
                    }
                    self.pos += len + 1; // the key and its ':'
                                         // A simple key may be a bool or null word (`on:`, `null:`).
                    plain_scalar(key)?
                }
            };
            let value = self.value(n, true)?;
            map.push((key, value));
            if self.eof || self.col < n {
                return Some(Node::Map(map));
            }
            if self.col > n || self.is_dash_item() {
                return None;
            }
        }
    }

    /// A quoted key on one line (PyYAML quotes keys such as `'8080'` or
    /// `'yes'`), with its `:`; a quoted key is always a string.
    fn quoted_key(&mut self, n: usize, double: bool) -> Option<String> {
        let rest = self.s.get(self.pos..)?;
        let line_end = self.pos + rest.iter().position(|c| *c == b'\n').unwrap_or(rest.len());
        let key = self.quoted(n, double)?;
        let colon_then_space =
            self.peek() == Some(b':') && matches!(self.at(self.pos + 1), None | Some(b' ' | b'\n'));
        if self.pos > line_end || !colon_then_space {
            return None;
        }
        self.pos += 1;
        Some(key)
    }

    fn sequence(&mut self, n: usize) -> Option<Node> {
        let mut items = Vec::new();
        loop {
            self.pos += 1; // the '-'
            items.push(self.value(n, false)?);
            if self.eof || self.col < n {
                return Some(Node::Seq(items));
            }
            if self.col > n {
                return None;
            }
            if !self.is_dash_item() {
                // A key at the sequence's column ends a sequence that is the
                // value of a key at that same column (PyYAML's style).
                return Some(Node::Seq(items));
            }
        }
    }

    /// The value after a key's `:` or an item's `-` of a collection at
    /// column `n`; leaves the parser at the next content line.
    fn value(&mut self, n: usize, in_mapping: bool) -> Option<Node> {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        match self.peek() {
            None | Some(b'\n') => {
                if self.peek().is_some() {
                    self.pos += 1;
                }
                self.next_line()?;
                if self.eof {
                    Some(null())
                } else if self.col > n {
                    self.block_node(self.col)
                } else if in_mapping && self.col == n && self.is_dash_item() {
                    // PyYAML's style: a sequence at its key's own column.
                    self.block_node(n)
                } else {
                    Some(null())
                }
            }
            Some(b'\'' | b'"') if !in_mapping && self.quoted_key_follows() => {
                let col = self.pos - self.line_start;
                self.block_node(col)
            }
            Some(b'\'') => {
                let v = self.quoted(n, false)?;
                self.end_line()?;
                Some(Node::str(v))
            }
            Some(b'"') => {
                let v = self.quoted(n, true)?;
                self.end_line()?;
                Some(Node::str(v))
            }
            Some(b'{') => {
                (self.at(self.pos + 1) == Some(b'}')).then_some(())?;
                self.pos += 2;
                self.end_line()?;
                Some(Node::empty_map())
            }
            Some(b'[') => {
                (self.at(self.pos + 1) == Some(b']')).then_some(())?;
                self.pos += 2;
                self.end_line()?;
                Some(Node::Seq(Vec::new()))
            }
            Some(_) if !in_mapping && (self.key_len() > 0 || self.is_dash_item()) => {
                // `- key: value` or `- - item`: a collection whose first entry
                // is on the item's line.
                let col = self.pos - self.line_start;
                self.block_node(col)
            }
            Some(_) => {
                let v = self.plain()?;
                self.end_line()?;
                Some(v)
            }
        }
    }

    /// A one-line plain scalar, typed as PyYAML types it.
    fn plain(&mut self) -> Option<Node> {
        let first = self.peek()?;
        let starts_ok = match first {
            b'-' => !self.is_dash_item(),
            b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
            | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' => false,
            _ => true,
        };
        if !starts_ok {
            return None;
        }
        let start = self.pos;
        let rest = self.s.get(start..)?;
        let len = rest.iter().position(|c| *c == b'\n').unwrap_or(rest.len());
        let line = rest.get(..len)?;
        // Comments, `key: value` inside a value, and a trailing ':' are left
        // to the full parser.
        if line.contains(&b'#')
            || line.windows(2).any(|w| w == b": ")
            || line.trim_ascii_end().ends_with(b":")
        {
            return None;
        }
        let text = self.text(start, start + line.trim_ascii_end().len())?;
        self.pos = start + len;
        plain_scalar(text)
    }

    /// A single- (`double == false`) or double-quoted scalar at `pos`, in a
    /// collection at column `n`; continuation lines must be indented past `n`.
    fn quoted(&mut self, n: usize, double: bool) -> Option<String> {
        let quote = if double { b'"' } else { b'\'' };
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            let rest = self.s.get(start..)?;
            let stop = rest
                .iter()
                .position(|c| *c == quote || *c == b'\n' || (double && *c == b'\\'))?;
            let segment = self.text(start, start + stop)?;
            self.pos = start + stop;
            match self.peek()? {
                b'\n' => {
                    out.push_str(segment.trim_end_matches(' '));
                    self.fold(n, &mut out, 0)?;
                }
                b'\\' => {
                    out.push_str(segment);
                    self.escape(n, &mut out)?;
                }
                _ => {
                    out.push_str(segment);
                    if !double && self.at(self.pos + 1) == Some(b'\'') {
                        out.push('\'');
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Some(out);
                    }
                }
            }
        }
    }

    /// At a line break inside a quoted scalar: one break folds to a space,
    /// each following empty line to a line feed (`escaped`: the first break
    /// was escaped, so it adds nothing). Leaves `pos` at the next line's
    /// first non-space character.
    fn fold(&mut self, n: usize, out: &mut String, escaped: usize) -> Option<()> {
        self.pos += 1;
        let mut empty = 0usize;
        loop {
            let start = self.pos;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek()? {
                b'\n' => {
                    empty += 1;
                    self.pos += 1;
                }
                _ => {
                    if self.pos - start <= n {
                        return None;
                    }
                    self.line_start = start;
                    break;
                }
            }
        }
        if escaped == 0 && empty == 0 {
            out.push(' ');
        } else {
            out.extend(std::iter::repeat_n('\n', empty));
        }
        Some(())
    }

    /// A double-quoted scalar's escape at `pos` (the backslash).
    fn escape(&mut self, n: usize, out: &mut String) -> Option<()> {
        let c = self.at(self.pos + 1)?;
        self.pos += 2;
        let ch = match c {
            b'\n' => {
                self.pos -= 1;
                return self.fold(n, out, 1);
            }
            b'0' => '\0',
            b'a' => '\u{7}',
            b'b' => '\u{8}',
            b't' => '\t',
            b'n' => '\n',
            b'v' => '\u{b}',
            b'f' => '\u{c}',
            b'r' => '\r',
            b'e' => '\u{1b}',
            b' ' => ' ',
            b'"' => '"',
            b'/' => '/',
            b'\\' => '\\',
            b'N' => '\u{85}',
            b'_' => '\u{a0}',
            b'L' => '\u{2028}',
            b'P' => '\u{2029}',
            b'x' | b'u' | b'U' => {
                let digits = match c {
                    b'x' => 2,
                    b'u' => 4,
                    _ => 8,
                };
                let hex = self.text(self.pos, self.pos + digits)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                self.pos += digits;
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        };
        out.push(ch);
        Some(())
    }
}

fn null() -> Node {
    Node::Scalar(Scalar {
        text: String::new(),
        kind: Kind::Null,
    })
}

/// A plain scalar the way PyYAML types it; `None` (leave it to the full
/// reader, which explains the problem) when `safe_load` would not construct it.
fn plain_scalar(text: &str) -> Option<Node> {
    let s = Scalar::plain(text);
    let ok = match s.kind {
        Kind::Merge | Kind::Value => false,
        kind => resolve::constructs(kind, text),
    };
    ok.then_some(Node::Scalar(s))
}

#[cfg(test)]
mod tests;
