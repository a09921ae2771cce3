//! The SkyPilot door's YAML contract, held to the real PyYAML and the real
//! SkyPilot client: what SkyPilot reads from Warden's answer is what it
//! reads from the user's document, plus Warden's changes.
//!
//! Starts `warden serve` on tests/client/yaml-contract.yaml and runs
//! tests/client/yaml_contract.py (generated documents, checked with
//! PyYAML; `WARDEN_YAML_CONTRACT_DOCS`, default 100,000, and
//! `WARDEN_YAML_CONTRACT_SEED`) and tests/client/yaml_contract_client.py
//! (a sample through SkyPilot's `admin_policy_utils.apply`).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::skypilot_client::{venv_python, Server, TempDir};

fn run(python: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(python)
        .args(args)
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The JSON summary on the last non-empty stdout line.
fn summary(text: &str) -> serde_json::Value {
    text.split("\n--- stderr ---\n")
        .next()
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn pyyaml_reads_back_what_the_user_wrote_plus_warden_changes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = venv_python();
    let server = Server::start_with_storage(&root.join("tests/client/yaml-contract.yaml"), "none");
    let url = format!("http://{}/skypilot", server.addr);
    let docs = std::env::var("WARDEN_YAML_CONTRACT_DOCS").unwrap_or_else(|_| "100000".to_owned());
    let seed = std::env::var("WARDEN_YAML_CONTRACT_SEED").unwrap_or_else(|_| "20261204".to_owned());
    let script = root.join("tests/client/yaml_contract.py");
    let (ok, text) = run(
        &python,
        &[script.to_str().expect("path"), &url, &docs, &seed],
    );
    let s = summary(&text);
    let want: u64 = docs.parse().expect("WARDEN_YAML_CONTRACT_DOCS is a number");
    assert!(
        ok && s["failures"] == 0 && s["documents"] == want,
        "the YAML contract does not hold:\n{text}\n--- warden ---\n{}",
        server.log()
    );
}

#[test]
fn the_real_skypilot_client_reads_back_the_same() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = venv_python();
    let workdir = TempDir::new("warden-yaml-contract-client");
    let server = Server::start_with_storage(&root.join("tests/client/yaml-contract.yaml"), "none");
    let url = format!("http://{}/skypilot", server.addr);
    let script = root.join("tests/client/yaml_contract_client.py");
    let (ok, text) = run(
        &python,
        &[
            script.to_str().expect("path"),
            "--url",
            &url,
            "--workdir",
            workdir.0.to_str().expect("path"),
            "--count",
            "200",
        ],
    );
    let s = summary(&text);
    assert!(
        ok && s["failures"] == 0 && s["checked"] == 400,
        "SkyPilot's client does not read back the same:\n{text}\n--- warden ---\n{}",
        server.log()
    );
}
