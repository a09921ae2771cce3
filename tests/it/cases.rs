//! Runs every policy case under tests/cases with the engine of `warden test`.

use std::path::Path;

use warden_server::cases::{find_case_files, run_file};

#[test]
fn every_policy_case_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let files = find_case_files(&dir).expect("list cases");
    assert!(
        files.len() >= 4,
        "expected case files under {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for f in &files {
        match run_file(f, None) {
            Ok(results) => {
                for r in results {
                    count += 1;
                    if !r.passed() {
                        failures.push(format!("{}\n    {}", r.name, r.failures.join("\n    ")));
                    }
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(count >= 70, "only {count} cases ran");
    assert!(
        failures.is_empty(),
        "{} failing case(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_runner_reports_a_wrong_expectation() {
    let tmp = std::env::temp_dir().join(format!("warden-case-{}.yaml", std::process::id()));
    std::fs::write(
        &tmp,
        "policy: {default_team: t, teams: {t: {max_nodes: 1}}}\ncases:\n  - note: wrong on purpose\n    request: {task: {num_nodes: 2}}\n    want: {verdict: allow, task: {num_nodes: 3}}\n",
    )
    .unwrap();
    let results = run_file(&tmp, None).unwrap();
    std::fs::remove_file(&tmp).ok();
    assert_eq!(results.len(), 1);
    let f = results[0].failures.join("\n");
    assert!(f.contains("verdict: want allow, got deny"), "{f}");
    assert!(f.contains("team.max_nodes"), "{f}");
    assert!(f.contains("task.num_nodes: want 3, got 2"), "{f}");
}
