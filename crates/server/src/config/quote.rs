//! Error text that stays short whatever a config file holds: long quoted
//! values are cut to their start and their length, and a problem line has a
//! maximum length. Used by every part of config loading (and by the OIDC
//! verifier for URLs it fetches), so it depends on none of them.

/// How much of a long quoted value an error message repeats; the rest is
/// replaced by its length.
const MAX_QUOTED_CHARS: usize = 60;
/// Quoted values up to this long are repeated whole (a clipped value is
/// shorter than this, so clipping twice changes nothing).
const CLIP_OVER_CHARS: usize = 120;
/// The longest a single problem line gets.
const MAX_PROBLEM_CHARS: usize = 1500;

/// Shortens every quoted run (`"..."` or `` `...` ``) longer than
/// [`MAX_QUOTED_CHARS`] to its start and its length.
pub(super) fn clip_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_PROBLEM_CHARS * 2));
    let mut rest = msg;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes().get(open).copied().unwrap_or(b'"') as char;
        out.push_str(rest.get(..=open).unwrap_or(""));
        let after = rest.get(open + 1..).unwrap_or("");
        let Some(close) = after.find(quote) else {
            rest = after;
            break;
        };
        let inner = after.get(..close).unwrap_or("");
        out.push_str(&clip(inner));
        out.push(quote);
        rest = after.get(close + 1..).unwrap_or("");
    }
    out.push_str(&clip_tail(rest));
    out
}

/// `text` if short, else its first [`MAX_QUOTED_CHARS`] characters and how
/// long it was.
pub(super) fn clip(text: &str) -> String {
    if text.chars().count() <= CLIP_OVER_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head}… ({} bytes in all)", text.len())
}

fn clip_tail(text: &str) -> String {
    if text.chars().count() <= MAX_PROBLEM_CHARS {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_PROBLEM_CHARS).collect();
    format!("{head}… ({} bytes in all)", text.len())
}

/// One problem line at most [`MAX_PROBLEM_CHARS`] characters long.
pub(super) fn cap(line: &str) -> String {
    clip_tail(line)
}
