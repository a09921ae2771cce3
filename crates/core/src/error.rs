//! Errors of the policy core.

use std::fmt;

/// An identifier from outside did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdError {
    /// The value was empty.
    #[error("{kind} is empty")]
    Empty {
        /// What was being parsed.
        kind: &'static str,
    },
    /// The value was longer than allowed.
    #[error("{kind} `{value}` is longer than {max} characters")]
    TooLong {
        /// What was being parsed.
        kind: &'static str,
        /// The offending value.
        value: String,
        /// The limit.
        max: usize,
    },
    /// The value held a character that is not allowed.
    #[error("{kind} `{value}` contains `{bad}`; use letters, digits, `-`, `_` or `.`")]
    BadChar {
        /// What was being parsed.
        kind: &'static str,
        /// The offending value.
        value: String,
        /// The first bad character.
        bad: char,
    },
}

/// A money amount did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoneyError {
    /// Negative, NaN or infinite.
    #[error("amount `{0}` must be a finite, non-negative number of US dollars")]
    Invalid(String),
    /// Too large to represent.
    #[error("amount `{0}` is too large")]
    TooLarge(String),
}

/// A YAML text nests too deeply to be read, or cannot be read at all
/// ([`crate::yaml_depth::check_depth`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum YamlDepthError {
    /// A list or mapping is nested deeper than the limit.
    #[error(
        "line {line}, column {col}: lists and mappings are nested deeper than the limit of {max} levels; a config needs far fewer (look for an unclosed `[` or `{{`)"
    )]
    TooDeep {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The limit.
        max: usize,
    },
    /// A mapping has the same key twice (the last would silently win).
    #[error(
        "line {line}: key `{key}` is given twice in the same mapping (first at line {first_line}); remove or merge one of them"
    )]
    DuplicateKey {
        /// The key (at most 60 characters of it).
        key: String,
        /// 1-based line of the first.
        first_line: usize,
        /// 1-based line of the second.
        line: usize,
    },
    /// The YAML scanner found an error.
    #[error("line {line}, column {col}: YAML syntax error: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What the scanner found.
        message: String,
    },
}

/// One problem found while loading a policy: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyProblem {
    /// Key path in the file, e.g. `rules[2].match.when`; empty for the whole file.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A policy could not be loaded; carries every problem found, in file order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct PolicyError {
    /// The problems, at least one.
    pub problems: Vec<PolicyProblem>,
}

impl PolicyError {
    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![PolicyProblem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
