//! PyYAML's implicit resolver (`yaml.resolver.Resolver`, PyYAML 6.0), the
//! one SkyPilot's `safe_load` uses: which type a *plain* scalar has.
//!
//! YAML 1.1, not 1.2: `yes`/`on`/`off` are booleans, `1e-4` is a string
//! (a float needs a dot and a signed exponent), `0777` is octal, `1:30` is
//! the integer 90, `1_000` is 1000, `2024-01-01` is a date. Each matcher
//! below is one of PyYAML's regular expressions written out by hand (the
//! regex engine would cost more than the rest of a decision); a unit test
//! holds them to PyYAML's answers for a corpus PyYAML resolved itself.

/// What PyYAML makes of a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `str`.
    Str,
    /// `None`.
    Null,
    /// `bool`.
    Bool,
    /// `int` (any size).
    Int,
    /// `float`.
    Float,
    /// `datetime.date` / `datetime.datetime`.
    Timestamp,
    /// `bytes` (`!!binary`; never implicit).
    Binary,
    /// `<<`: a merge key.
    Merge,
    /// `=`: PyYAML's "value" tag, which `safe_load` cannot construct
    /// except as a mapping key.
    Value,
}

impl Kind {
    /// The full tag PyYAML gives this kind.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Str => "tag:yaml.org,2002:str",
            Kind::Null => "tag:yaml.org,2002:null",
            Kind::Bool => "tag:yaml.org,2002:bool",
            Kind::Int => "tag:yaml.org,2002:int",
            Kind::Float => "tag:yaml.org,2002:float",
            Kind::Timestamp => "tag:yaml.org,2002:timestamp",
            Kind::Binary => "tag:yaml.org,2002:binary",
            Kind::Merge => "tag:yaml.org,2002:merge",
            Kind::Value => "tag:yaml.org,2002:value",
        }
    }

    /// The kind an explicit scalar tag asks for; `None` for a tag that
    /// `safe_load` cannot construct on a scalar.
    pub fn from_tag(tag: &str) -> Option<Kind> {
        Some(match tag.strip_prefix("tag:yaml.org,2002:")? {
            "str" => Kind::Str,
            "null" => Kind::Null,
            "bool" => Kind::Bool,
            "int" => Kind::Int,
            "float" => Kind::Float,
            "timestamp" => Kind::Timestamp,
            "binary" => Kind::Binary,
            _ => return None,
        })
    }
}

/// The kind PyYAML resolves an untagged plain scalar with value `v` to.
pub fn resolve_plain(v: &str) -> Kind {
    let b = v.as_bytes();
    let Some(&first) = b.first() else {
        return Kind::Null;
    };
    match first {
        b'y' | b'Y' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' if is_bool(v) => return Kind::Bool,
        b'n' | b'N' => {
            if is_bool(v) {
                return Kind::Bool;
            }
            if matches!(v, "null" | "Null" | "NULL") {
                return Kind::Null;
            }
        }
        b'~' if b.len() == 1 => return Kind::Null,
        b'<' if v == "<<" => return Kind::Merge,
        b'=' if b.len() == 1 => return Kind::Value,
        b'-' | b'+' | b'.' | b'0'..=b'9' => {
            if is_float(b) {
                return Kind::Float;
            }
            if is_int(b) {
                return Kind::Int;
            }
            if first.is_ascii_digit() && is_timestamp(b) {
                return Kind::Timestamp;
            }
        }
        _ => {}
    }
    Kind::Str
}

/// PyYAML's boolean words (`y` and `n` are strings).
pub fn is_bool(v: &str) -> bool {
    matches!(
        v,
        "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// The value of a boolean word, any case (`safe_load`'s `bool_values`).
pub fn bool_value(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Some(true),
        "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// `i` past any bytes in `set`.
fn skip(b: &[u8], mut i: usize, set: impl Fn(u8) -> bool) -> usize {
    while b.get(i).is_some_and(|c| set(*c)) {
        i += 1;
    }
    i
}

fn digit_(c: u8) -> bool {
    c.is_ascii_digit() || c == b'_'
}

fn sign(b: &[u8]) -> usize {
    usize::from(matches!(b.first(), Some(b'-' | b'+')))
}

/// `(?::[0-5]?[0-9])+` from `i`; the end, or `None` if not one group.
fn sexagesimal_groups(b: &[u8], mut i: usize) -> Option<usize> {
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        let d1 = b.get(i + 1).copied();
        let d2 = b.get(i + 2).copied();
        match (d1, d2) {
            (Some(x @ b'0'..=b'5'), Some(y)) if y.is_ascii_digit() => {
                let _ = x;
                i += 3;
            }
            (Some(x), _) if x.is_ascii_digit() => i += 2,
            _ => break,
        }
        groups += 1;
    }
    (groups > 0).then_some(i)
}

/// `[eE][-+][0-9]+` at `i` (optional): the end.
fn exponent(b: &[u8], i: usize) -> usize {
    if matches!(b.get(i), Some(b'e' | b'E'))
        && matches!(b.get(i + 1), Some(b'-' | b'+'))
        && b.get(i + 2).is_some_and(u8::is_ascii_digit)
    {
        skip(b, i + 2, |c| c.is_ascii_digit())
    } else {
        i
    }
}

/// PyYAML's float expression.
fn is_float(b: &[u8]) -> bool {
    let n = b.len();
    // `\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?` and `\.(?:nan|NaN|NAN)` (unsigned).
    if b.first() == Some(&b'.') {
        if matches!(b, b".nan" | b".NaN" | b".NAN" | b".inf" | b".Inf" | b".INF") {
            return true;
        }
        if b.get(1).is_some_and(u8::is_ascii_digit) {
            let i = skip(b, 2, digit_);
            return exponent(b, i) == n;
        }
        return false;
    }
    let s = sign(b);
    let rest = b.get(s..).unwrap_or_default();
    // `[-+]?\.(?:inf|Inf|INF)`
    if matches!(rest, b".inf" | b".Inf" | b".INF") {
        return true;
    }
    if !rest.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let i = skip(b, s + 1, digit_);
    // `[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?`
    if b.get(i) == Some(&b'.') {
        let j = skip(b, i + 1, digit_);
        if exponent(b, j) == n {
            return true;
        }
    }
    // `[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*`
    if let Some(j) = sexagesimal_groups(b, i) {
        if b.get(j) == Some(&b'.') && skip(b, j + 1, digit_) == n {
            return true;
        }
    }
    false
}

/// PyYAML's int expression.
fn is_int(b: &[u8]) -> bool {
    let n = b.len();
    let s = sign(b);
    let rest = b.get(s..).unwrap_or_default();
    match rest {
        [b'0', b'b', tail @ ..] if !tail.is_empty() => {
            return tail.iter().all(|c| matches!(c, b'0' | b'1' | b'_'))
        }
        [b'0', b'x', tail @ ..] if !tail.is_empty() => {
            return tail.iter().all(|c| c.is_ascii_hexdigit() || *c == b'_')
        }
        [b'0'] => return true,
        [b'0', tail @ ..] => return tail.iter().all(|c| matches!(c, b'0'..=b'7' | b'_')),
        [b'1'..=b'9', ..] => {}
        _ => return false,
    }
    let i = skip(b, s + 1, digit_);
    if i == n {
        return true;
    }
    // `[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+`
    sexagesimal_groups(b, i) == Some(n)
}

/// `[0-9]` repeated between `min` and `max` times from `i`: the end.
fn digits(b: &[u8], i: usize, min: usize, max: usize) -> Option<usize> {
    let end = skip(b, i, |c| c.is_ascii_digit());
    let len = end - i;
    (len >= min && len <= max).then_some(end)
}

/// PyYAML's timestamp expression.
fn is_timestamp(b: &[u8]) -> bool {
    let n = b.len();
    let Some(i) = digits(b, 0, 4, 4) else {
        return false;
    };
    if b.get(i) != Some(&b'-') {
        return false;
    }
    // The date only: exactly YYYY-MM-DD.
    if n == 10
        && digits(b, 5, 2, 2) == Some(7)
        && b.get(7) == Some(&b'-')
        && digits(b, 8, 2, 2) == Some(10)
    {
        return true;
    }
    let check = || -> Option<bool> {
        let i = digits(b, i + 1, 1, 2)?;
        (b.get(i) == Some(&b'-')).then_some(())?;
        let mut i = digits(b, i + 1, 1, 2)?;
        // `(?:[Tt]|[ \t]+)`
        match b.get(i)? {
            b'T' | b't' => i += 1,
            b' ' | b'\t' => i = skip(b, i, |c| c == b' ' || c == b'\t'),
            _ => return Some(false),
        }
        let i = digits(b, i, 1, 2)?;
        (b.get(i) == Some(&b':')).then_some(())?;
        let i = digits(b, i + 1, 2, 2)?;
        (b.get(i) == Some(&b':')).then_some(())?;
        let mut i = digits(b, i + 1, 2, 2)?;
        if b.get(i) == Some(&b'.') {
            i = skip(b, i + 1, |c| c.is_ascii_digit());
        }
        if i == n {
            return Some(true);
        }
        // `(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?`
        let mut i = skip(b, i, |c| c == b' ' || c == b'\t');
        match b.get(i)? {
            b'Z' => i += 1,
            b'-' | b'+' => {
                i = digits(b, i + 1, 1, 2)?;
                if b.get(i) == Some(&b':') {
                    i = digits(b, i + 1, 2, 2)?;
                }
            }
            _ => return Some(false),
        }
        Some(i == n)
    };
    check().unwrap_or(false)
}

/// An integer as `safe_load` constructs it (`_` dropped; `0b`, `0x`, a
/// leading `0` for octal, `a:b:c` base 60). `None` when PyYAML would fail
/// to construct it or it does not fit 128 bits.
pub fn int_value(text: &str) -> Option<i128> {
    // The usual case, a short decimal: no copy.
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
    {
        return text.parse::<i128>().ok();
    }
    let v: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, v) = match v.as_bytes().first()? {
        b'-' => (true, v.get(1..)?),
        b'+' => (false, v.get(1..)?),
        _ => (false, v.as_str()),
    };
    let radix = |digits: &str, r: u32| -> Option<i128> {
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(r)) {
            return None;
        }
        i128::from_str_radix(digits, r).ok()
    };
    let n = if v == "0" {
        0
    } else if let Some(d) = v.strip_prefix("0b") {
        radix(d, 2)?
    } else if let Some(d) = v.strip_prefix("0x") {
        radix(d, 16)?
    } else if v.starts_with('0') {
        radix(v, 8)?
    } else if v.contains(':') {
        let mut n: i128 = 0;
        for part in v.split(':') {
            n = n.checked_mul(60)?.checked_add(radix(part, 10)?)?;
        }
        n
    } else {
        radix(v, 10)?
    };
    Some(if neg { -n } else { n })
}

/// Whether `safe_load` can construct a scalar of `kind` from `text`: an
/// int or float it can parse, a boolean word. (`=` and `<<` depend on where
/// they stand: the caller decides.)
pub fn constructs(kind: Kind, text: &str) -> bool {
    match kind {
        Kind::Int => int_value(text).is_some() || big_int(text),
        Kind::Float => float_value(text).is_some(),
        Kind::Bool => bool_value(text).is_some(),
        _ => true,
    }
}

/// A decimal integer past 128 bits, which PyYAML (big integers) reads.
fn big_int(text: &str) -> bool {
    let v = text.trim_start_matches(['-', '+']);
    !v.is_empty() && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit() || b == b'_')
}

/// A float as `safe_load` constructs it (`_` dropped, any case, `.inf`,
/// `.nan`, base 60). `None` when PyYAML would fail to construct it.
pub fn float_value(text: &str) -> Option<f64> {
    // The usual case, `1.5` or `-0.25e+3`: no copy.
    if text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit())
    {
        if let Some(f) = python_float(text) {
            return Some(f);
        }
    }
    let v: String = text
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (neg, v) = match v.as_bytes().first()? {
        b'-' => (true, v.get(1..)?),
        b'+' => (false, v.get(1..)?),
        _ => (false, v.as_str()),
    };
    let f = if v == ".inf" {
        f64::INFINITY
    } else if v == ".nan" {
        return Some(f64::NAN);
    } else if v.contains(':') {
        let mut f = 0.0;
        for part in v.split(':') {
            f = f * 60.0 + python_float(part)?;
        }
        f
    } else {
        python_float(v)?
    };
    Some(if neg { -f } else { f })
}

/// Python's `float(s)` for the decimal forms the resolver lets through
/// (Rust also reads `inf`/`nan` words, which never reach here untagged).
fn python_float(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(value, tag)` pairs that PyYAML 6.0's resolver produced (generated
    /// by `gen_corpus.py resolve`), including every edge of every regex.
    #[test]
    fn agrees_with_pyyaml_resolver() {
        let corpus = include_str!("resolve_corpus.jsonl");
        let mut n = 0;
        for line in corpus.lines() {
            let (value, tag): (String, String) = serde_json::from_str(line).expect("corpus line");
            let got = resolve_plain(&value).tag();
            assert_eq!(got, tag, "PyYAML resolves {value:?} to {tag}, we to {got}");
            n += 1;
        }
        assert!(n > 500, "corpus has {n} lines");
    }

    #[test]
    fn constructs_like_pyyaml() {
        assert_eq!(int_value("1:30"), Some(90));
        assert_eq!(int_value("-0x1_F"), Some(-31));
        assert_eq!(int_value("0777"), Some(511));
        assert_eq!(int_value("0b101"), Some(5));
        assert_eq!(int_value("+1_000"), Some(1000));
        assert_eq!(int_value("0"), Some(0));
        assert_eq!(int_value("0b_"), None);
        assert_eq!(float_value("1.5e+3"), Some(1500.0));
        assert_eq!(float_value("-.INF"), Some(f64::NEG_INFINITY));
        assert!(float_value(".NaN").is_some_and(f64::is_nan));
        assert_eq!(float_value("1:30.5"), Some(90.5));
        assert_eq!(float_value("1_0.5"), Some(10.5));
        assert_eq!(bool_value("ON"), Some(true));
        assert_eq!(bool_value("n"), None);
    }
}
