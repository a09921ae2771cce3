//! A fast path for the YAML that SkyPilot's client sends.
//!
//! SkyPilot writes `task`, `skypilot_config` and `user` with PyYAML's block
//! style (`yaml.dump(..., default_flow_style=False)`): indented mappings,
//! `- ` sequences, plain scalars, single- or double-quoted scalars that may
//! span lines, and `{}` / `[]`. Parsing those few hundred bytes with the
//! general parser (`serde_norway`, a port of libyaml) cost more than every
//! other step of a decision together, so [`parse`] reads that subset directly.
//!
//! The contract is narrow and checked by a differential test
//! (`tests` below: every fixture, generated documents, and random mutations of
//! them): when [`parse`] returns `Some(value)`, `serde_norway::from_str` returns
//! the same value for the same text. Whenever the text strays outside the
//! subset — comments, anchors, aliases, tags, block scalars (`|`, `>`), flow
//! collections other than `{}`/`[]`, tabs, `\r`, document markers, quoted or
//! unusual keys, multi-line plain scalars, numbers other than plain decimal
//! integers, duplicate keys, or anything else unusual — it returns `None` and
//! the caller falls back to the full parser, which also produces the error
//! messages. Plain scalars are typed exactly as `serde_norway` types them
//! (null, bool, integer, float, else string).

use serde_json::{Map, Number, Value};

/// Deeper documents are left to the full parser.
const MAX_DEPTH: usize = 64;

/// Parses `text` if it lies within the block-style subset described in the
/// module documentation; `None` means "use the full parser".
pub fn parse(text: &str) -> Option<Value> {
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
    fn block_node(&mut self, n: usize) -> Option<Value> {
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

    fn mapping(&mut self, n: usize) -> Option<Value> {
        let mut map = Map::new();
        loop {
            let key = match self.peek() {
                Some(q @ (b'\'' | b'"')) => self.quoted_key(n, q == b'"')?,
                _ => {
                    let len = self.key_len();
                    let key = self.text(self.pos, self.pos + len)?;
                    if len == 0 || resolves_to_non_string(key) {
                        return None;
                    }
                    self.pos += len + 1; // the key and its ':'
                    key.to_owned()
                }
            };
            let value = self.value(n, true)?;
            match map.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(_) => return None,
            }
            if self.eof || self.col < n {
                return Some(Value::Object(map));
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

    fn sequence(&mut self, n: usize) -> Option<Value> {
        let mut items = Vec::new();
        loop {
            self.pos += 1; // the '-'
            items.push(self.value(n, false)?);
            if self.eof || self.col < n {
                return Some(Value::Array(items));
            }
            if self.col > n {
                return None;
            }
            if !self.is_dash_item() {
                // A key at the sequence's column ends a sequence that is the
                // value of a key at that same column (PyYAML's style).
                return Some(Value::Array(items));
            }
        }
    }

    /// The value after a key's `:` or an item's `-` of a collection at
    /// column `n`; leaves the parser at the next content line.
    fn value(&mut self, n: usize, in_mapping: bool) -> Option<Value> {
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
                    Some(Value::Null)
                } else if self.col > n {
                    self.block_node(self.col)
                } else if in_mapping && self.col == n && self.is_dash_item() {
                    // PyYAML's style: a sequence at its key's own column.
                    self.block_node(n)
                } else {
                    Some(Value::Null)
                }
            }
            Some(b'\'' | b'"') if !in_mapping && self.quoted_key_follows() => {
                let col = self.pos - self.line_start;
                self.block_node(col)
            }
            Some(b'\'') => {
                let v = self.quoted(n, false)?;
                self.end_line()?;
                Some(Value::String(v))
            }
            Some(b'"') => {
                let v = self.quoted(n, true)?;
                self.end_line()?;
                Some(Value::String(v))
            }
            Some(b'{') => {
                (self.at(self.pos + 1) == Some(b'}')).then_some(())?;
                self.pos += 2;
                self.end_line()?;
                Some(Value::Object(Map::new()))
            }
            Some(b'[') => {
                (self.at(self.pos + 1) == Some(b']')).then_some(())?;
                self.pos += 2;
                self.end_line()?;
                Some(Value::Array(Vec::new()))
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

    /// A one-line plain scalar, typed as `serde_norway` types it.
    fn plain(&mut self) -> Option<Value> {
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
        resolve_plain(text)
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

/// Plain words `serde_norway` reads as null or bool: never taken as keys here.
fn resolves_to_non_string(key: &str) -> bool {
    matches!(
        key,
        "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
    )
}

/// Types a plain scalar the way `serde_norway` does for an untagged value:
/// null words, bool words, integers (decimal, `0x`, `0o`, `0b`, signed;
/// leading zeros make a string), finite floats and `.inf`/`.nan` forms,
/// otherwise a string. Integers beyond 64 bits are left to the full parser.
fn resolve_plain(v: &str) -> Option<Value> {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    let first = v.as_bytes().first().copied()?;
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        // Neither an integer nor a float can start this way; Rust's float
        // parser accepts "inf", "infinity" and "nan", which are not finite,
        // so `serde_norway` keeps those as strings too.
        return Some(Value::String(v.to_owned()));
    }
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    let leading_zero = {
        let d = v.strip_prefix(['-', '+']).unwrap_or(v);
        d.len() > 1 && d.starts_with('0') && d.bytes().skip(1).all(|b| b.is_ascii_digit())
    };
    if leading_zero {
        return Some(Value::String(v.to_owned()));
    }
    let prefixed = |s: &str| {
        ["0x", "0o", "0b", "-0x", "-0o", "-0b"]
            .iter()
            .any(|p| s.starts_with(p))
    };
    if prefixed(unsigned) {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !unsigned.starts_with('-') && digits(unsigned) {
        return unsigned
            .parse::<u64>()
            .ok()
            .map(|n| Value::Number(n.into()));
    }
    if let Some(d) = v.strip_prefix('-') {
        if digits(d) {
            return v.parse::<i64>().ok().map(|n| Value::Number(n.into()));
        }
    }
    if unsigned.contains(['i', 'I', 'n', 'N']) && unsigned.contains('.') {
        // `.inf`, `-.inf`, `.nan` and their cases: left to the full parser.
        return None;
    }
    let float = if unsigned.starts_with(['+', '-']) && v.starts_with('+') {
        None
    } else {
        unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
    };
    Some(match float {
        Some(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        None => Value::String(v.to_owned()),
    })
}

#[cfg(test)]
mod tests;
