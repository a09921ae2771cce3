//! Identifiers that come from outside: parsed once, typed from then on.

use std::fmt;

use crate::error::IdError;

fn check_name(kind: &'static str, raw: &str, max: usize) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if raw.len() > max {
        return Err(IdError::TooLong {
            kind,
            value: raw.to_owned(),
            max,
        });
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::BadChar {
            kind,
            value: raw.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// A team's name as written in the config (`teams.<name>`): ASCII letters,
/// digits, `-`, `_`, `.`; at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TeamName(String);

impl TeamName {
    /// Parses a team name.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_name("team name", raw, 63)?;
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TeamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rule's name (`rules[].name`), unique within a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RuleName(String);

impl RuleName {
    /// Parses a rule name.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        check_name("rule name", raw, 128)?;
        Ok(Self(raw.to_owned()))
    }

    /// Names of the implicit team-limit rules (`team.max_nodes`, ...).
    pub(crate) fn builtin(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A GPU model such as `H100`, `A100-80GB`, `RTX4090`. Compared without
/// regard to ASCII case (SkyPilot and Vast spell models differently); the
/// canonical form is upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct GpuModel(String);

impl GpuModel {
    /// Parses a GPU model name.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        check_name("GPU model", raw, 64)?;
        Ok(Self(raw.to_ascii_uppercase()))
    }

    /// The canonical (upper-case) name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_reject_spaces_and_empty() {
        assert!(TeamName::parse("ml-research").is_ok());
        assert!(TeamName::parse("").is_err());
        let err = TeamName::parse("ml research").unwrap_err().to_string();
        assert!(err.contains("` `"), "{err}");
        assert!(TeamName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn gpu_models_compare_case_insensitively() {
        assert_eq!(
            GpuModel::parse("h100").unwrap(),
            GpuModel::parse("H100").unwrap()
        );
        assert_eq!(GpuModel::parse("a100-80gb").unwrap().as_str(), "A100-80GB");
        assert!(GpuModel::parse("H100:8").is_err());
    }
}
