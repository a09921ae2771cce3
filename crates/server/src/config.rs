//! Loading the config file: read, parse, validate; errors name the file.

use std::path::Path;

use warden_core::Policy;

/// Loads and validates a policy file. The error text names the file, each
/// key path and the problem, one per line.
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the config file: {e}", path.display()))?;
    Policy::from_yaml(&text).map_err(|e| {
        e.problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
