//! `warden doctor`: the security checklist, run as the binary on configs,
//! stores and git repositories made in temp dirs. A clean deployment exits
//! 0 with an `ok` row per check; each exposure is a `serious` or `warning`
//! row naming the file, key or address and the fix; no secret is printed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use warden_core::access::Role;
use warden_core::TeamName;
use warden_store::{NewKey, Store, UnixMicros};

use crate::cli::warden;
use crate::skypilot_client::TempDir;

const DAY: i64 = 86_400_000_000;
/// 64 lowercase hex characters, as a Vast.ai key is.
const VAST_KEY: &str = "5f0c9e1d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The rows of the table with this severity and check.
fn rows<'a>(out: &'a str, severity: &str, check: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| {
            l.strip_prefix(severity)
                .is_some_and(|rest| rest.starts_with(' ') && rest.trim_start().starts_with(check))
        })
        .collect()
}

/// Runs git in `dir`, failing the test if git fails.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Doctor Test",
            "-c",
            "user.email=doctor@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A git repository with one clean commit.
fn clean_repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README.md"), "# infra\napi_key_file: vast.key\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "readme"]);
    repo
}

/// A deployment as it should be: private secret files, keys that expire, a
/// loopback address, a clean repository. Exit 0, an `ok` row per check.
#[test]
fn a_clean_deployment_passes_and_shows_what_was_checked() {
    let dir = TempDir::new("warden-doctor-clean");
    write(&dir.0.join("vast.key"), &format!("{VAST_KEY}\n"), 0o600);
    write(&dir.0.join("sky.token"), "sky_0123456789abcdef\n", 0o600);
    write(
        &dir.0.join("cleanup_ed25519"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        0o600,
    );
    let config = dir.0.join("warden.yaml");
    write(
        &config,
        "storage: sqlite://state.db\nvast:\n  api_key_file: vast.key\n  pre_destroy_command: sync-out.sh\n  pre_destroy_ssh_key: cleanup_ed25519\nskypilot_api:\n  url: http://127.0.0.1:46580\n  token_file: sky.token\nteams:\n  ml: {}\n",
        0o600,
    );
    let cfg = config.to_str().unwrap();
    let (code, _, err) = warden(&["keys", "create", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    let repo = clean_repo(&dir.0);

    let (code, out, err) = warden(&["doctor", "--config", cfg, "--scan", repo.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines()
            .next()
            .is_some_and(|h| h.split_whitespace().collect::<Vec<_>>()
                == ["severity", "check", "finding", "fix"]),
        "{out}"
    );
    let secret_files = rows(&out, "ok", "secret files");
    assert_eq!(secret_files.len(), 3, "{out}");
    for (setting, file) in [
        ("vast.api_key_file", "vast.key"),
        ("skypilot_api.token_file", "sky.token"),
        ("vast.pre_destroy_ssh_key", "cleanup_ed25519"),
    ] {
        assert!(
            secret_files.iter().any(|r| r.contains(setting)
                && r.contains(&dir.0.join(file).display().to_string())
                && r.contains("mode 0600")),
            "{setting}: {out}"
        );
    }
    for check in [
        "vast key age",
        "warden keys",
        "listen address",
        "store password",
        "git secrets",
    ] {
        assert_eq!(rows(&out, "ok", check).len(), 1, "{check}: {out}");
    }
    assert!(
        rows(&out, "ok", "warden keys")[0].contains("1 active key(s)"),
        "{out}"
    );
    assert!(
        rows(&out, "ok", "listen address")[0].contains("127.0.0.1:8080"),
        "{out}"
    );
    assert!(out.contains("0 serious, 0 warning(s), 8 ok"), "{out}");
    assert!(!out.contains(VAST_KEY), "{out}");

    // `storage: none` and credentials from the environment: still a row each.
    let bare = dir.0.join("bare.yaml");
    write(&bare, "storage: none\nteams:\n  ml: {}\n", 0o644);
    let (code, out, err) = warden(&["doctor", "--config", bare.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        rows(&out, "ok", "warden keys")[0].contains("`storage: none`"),
        "{out}"
    );
    assert!(
        rows(&out, "ok", "secret files")[0].contains("no secret file configured"),
        "{out}"
    );

    // A config that does not load is the usual error.
    let (code, out, err) = warden(&["doctor", "--config", "does/not/exist.yaml"]);
    assert_eq!(code, 1);
    assert!(
        out.is_empty() && err.contains("cannot read the config file"),
        "{err}"
    );
}

/// A key file others can read, a missing one, an old Vast key file: each
/// named with its fix.
#[test]
fn secret_files_others_can_read_are_serious() {
    let dir = TempDir::new("warden-doctor-modes");
    let key = dir.0.join("vast.key");
    write(&key, &format!("{VAST_KEY}\n"), 0o644);
    // Changed 200 days ago: older than keys.max_age_days (90).
    std::fs::File::options()
        .write(true)
        .open(&key)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(200 * 86_400))
        .unwrap();
    let config = dir.0.join("warden.yaml");
    write(
        &config,
        "storage: none\nvast:\n  api_key_file: vast.key\nskypilot_api:\n  url: http://127.0.0.1:46580\n  token_file: missing.token\nteams:\n  ml: {}\n",
        0o600,
    );
    let (code, out, err) = warden(&["doctor", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let shown = key.display().to_string();
    let serious = rows(&out, "serious", "secret files");
    assert_eq!(serious.len(), 2, "{out}");
    assert!(
        serious.iter().any(|r| r.contains("vast.api_key_file")
            && r.contains(&format!(
                "`{shown}` is accessible by group or others (mode 0644)"
            ))
            && r.contains(&format!("chmod 600 {shown}"))),
        "{out}"
    );
    assert!(
        serious.iter().any(|r| r.contains("skypilot_api.token_file")
            && r.contains("missing.token")
            && r.contains("cannot read")),
        "{out}"
    );
    let age = rows(&out, "warning", "vast key age");
    assert_eq!(age.len(), 1, "{out}");
    assert!(
        age[0].contains("last changed 200 days ago") && age[0].contains("Vast.ai console"),
        "{out}"
    );
    assert!(out.contains("2 serious, 1 warning(s)"), "{out}");
    assert!(
        !out.contains(VAST_KEY) && !err.contains(VAST_KEY),
        "{out}{err}"
    );

    // Fixed as told: no longer a finding.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out, _) = warden(&["doctor", "--config", config.to_str().unwrap()]);
    assert!(rows(&out, "serious", "secret files").len() == 1, "{out}");
    assert!(
        rows(&out, "ok", "secret files")
            .iter()
            .any(|r| r.contains("vast.api_key_file")),
        "{out}"
    );
}

/// Keys in the store: `--expires never` is a warning (serious for an admin
/// key); a key older than `keys.max_age_days` is serious.
#[tokio::test]
async fn keys_that_never_expire_or_outlive_the_rotation_rule_are_found() {
    let dir = TempDir::new("warden-doctor-keys");
    let config = dir.0.join("warden.yaml");
    write(
        &config,
        "storage: sqlite://state.db\nkeys: {max_age_days: 30}\nteams:\n  ml: {}\n",
        0o600,
    );
    let cfg = config.to_str().unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--config", cfg, "--team", "ml"];
        args.extend_from_slice(extra);
        let (code, out, err) = warden(&args);
        assert_eq!(code, 0, "{err}");
        out.trim()[4..20].to_owned()
    };

    let forever = create(&["--expires", "never", "--name", "ci"]);
    let (code, out, err) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 0, "a warning alone does not fail: {out}{err}");
    let warned = rows(&out, "warning", "warden keys");
    assert_eq!(warned.len(), 1, "{out}");
    assert!(
        warned[0].contains(&format!(
            "ml-engineer key {forever} of team `ml`, name `ci` never expires"
        )) && warned[0].contains(&format!(
            "warden keys rotate --config {cfg} {forever} --expires 30d"
        )),
        "{out}"
    );

    // A key made 45 days ago (the store takes the instant of creation).
    let store = Store::connect(&format!("sqlite://{}", dir.0.join("state.db").display()))
        .await
        .unwrap();
    let now = UnixMicros::from_system_time(SystemTime::now());
    let old = store
        .create_key(
            NewKey {
                team: TeamName::parse("ml").unwrap(),
                user: None,
                name: None,
                expires: Some(UnixMicros::from_micros(now.micros() + 300 * DAY)),
                role: Role::Viewer,
            },
            UnixMicros::from_micros(now.micros() - 45 * DAY),
        )
        .await
        .unwrap();
    store.close().await;
    let old_id = old.key.id.as_str();
    let (code, out, err) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    let serious = rows(&out, "serious", "warden keys");
    assert_eq!(serious.len(), 1, "{out}");
    assert!(
        serious[0].contains(&format!(
            "viewer key {old_id} of team `ml` was created 45 days ago"
        )) && serious[0].contains("more than keys.max_age_days (30)")
            && serious[0].contains(&format!("warden keys rotate --config {cfg} {old_id}"))
            && !serious[0].contains("--expires"),
        "{out}"
    );
    assert_eq!(rows(&out, "warning", "warden keys").len(), 1, "{out}");

    // Rotated, the old key is on its way out and the new one is young.
    let (code, _, err) = warden(&["keys", "rotate", "--config", cfg, old_id]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(rows(&out, "serious", "warden keys").is_empty(), "{out}");

    // An admin key that never expires acts in every team: serious.
    let admin = create(&["--role", "admin", "--expires", "never"]);
    let (code, out, _) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 1, "{out}");
    let serious = rows(&out, "serious", "warden keys");
    assert!(
        serious.len() == 1
            && serious[0].contains(&format!("admin key {admin}"))
            && serious[0].contains("never expires"),
        "{out}"
    );
}

/// A Warden key committed and then deleted is still in the history: found
/// by commit and file, shown by its id only. A Vast key in the work tree is
/// shown by its first four characters. A directory that is not a
/// repository is a warning.
#[test]
fn keys_committed_to_git_are_found_without_being_shown() {
    let dir = TempDir::new("warden-doctor-git");
    let config = dir.0.join("warden.yaml");
    write(
        &config,
        "storage: sqlite://state.db\nteams:\n  ml: {}\n",
        0o600,
    );
    let cfg = config.to_str().unwrap();
    let (code, out, err) = warden(&["keys", "create", "--config", cfg, "--team", "ml"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    let (id, secret) = (&key[4..20], &key[21..]);
    assert_eq!(secret.len(), 64, "{key}");

    let repo = clean_repo(&dir.0);
    std::fs::write(
        repo.join("deploy.env"),
        format!("REGION=eu\nWARDEN_KEY={key}\n"),
    )
    .unwrap();
    git(&repo, &["add", "deploy.env"]);
    git(&repo, &["commit", "-q", "-m", "deploy settings"]);
    git(&repo, &["rm", "-q", "deploy.env"]);
    git(&repo, &["commit", "-q", "-m", "oops, no keys in git"]);
    let scan = repo.to_str().unwrap();

    let (code, out, err) = warden(&["doctor", "--config", cfg, "--scan", scan]);
    assert_eq!(code, 1, "{out}{err}");
    let found = rows(&out, "serious", "git secrets");
    assert_eq!(found.len(), 1, "{out}");
    let added_in = Command::new("git")
        .args(["-C", scan, "rev-parse", "HEAD~1"])
        .output()
        .unwrap();
    let added_in = String::from_utf8_lossy(&added_in.stdout)[..12].to_owned();
    assert!(
        found[0].contains(&format!("Warden key wdn_{id}_… (id {id})"))
            && found[0].contains(&format!("commit {added_in} deploy.env:2"))
            && !found[0].contains("work tree")
            && found[0].contains(&format!("warden keys revoke --config {cfg} {id}")),
        "{out}"
    );
    assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");

    // A Vast key in a tracked file of the work tree; a directory that is no
    // repository.
    std::fs::write(
        repo.join("vast.env"),
        format!("export VAST_API_KEY={VAST_KEY}\n"),
    )
    .unwrap();
    git(&repo, &["add", "vast.env"]);
    let plain = dir.0.join("not-a-repo");
    std::fs::create_dir_all(&plain).unwrap();
    let (code, out, err) = warden(&[
        "doctor",
        "--config",
        cfg,
        "--scan",
        scan,
        "--scan",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let found = rows(&out, "serious", "git secrets");
    assert_eq!(found.len(), 2, "{out}");
    assert!(
        found.iter().any(
            |r| r.contains("Vast.ai-looking API key 5f0c… (64 characters)")
                && r.contains("work tree vast.env:1")
        ),
        "{out}"
    );
    let warned = rows(&out, "warning", "git secrets");
    assert!(
        warned.len() == 1 && warned[0].contains("is not a git work tree"),
        "{out}"
    );
    assert!(!out.contains(VAST_KEY) && !out.contains(secret), "{out}");
}

/// Plain HTTP anywhere but loopback is serious; TLS files serve can use are ok.
#[test]
fn serving_beyond_loopback_without_tls_is_serious() {
    let dir = TempDir::new("warden-doctor-listen");
    let config = dir.0.join("warden.yaml");
    write(&config, "storage: none\nteams:\n  ml: {}\n", 0o600);
    let cfg = config.to_str().unwrap();
    let (code, out, err) = warden(&["doctor", "--config", cfg, "--listen", "0.0.0.0:8080"]);
    assert_eq!(code, 1, "{out}{err}");
    let found = rows(&out, "serious", "listen address");
    assert!(
        found.len() == 1
            && found[0].contains("`0.0.0.0:8080` is not a loopback address")
            && found[0].contains("cross the network in clear")
            && found[0].contains("--tls-cert FILE --tls-key FILE"),
        "{out}"
    );
    let (code, out, _) = warden(&["doctor", "--config", cfg, "--listen", "[::1]:8080"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rows(&out, "ok", "listen address").len(), 1, "{out}");

    // With the TLS files `serve` uses: ok when they work, serious when not.
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    write(&cert, &made.cert.pem(), 0o644);
    write(&key, &made.key_pair.serialize_pem(), 0o600);
    let tls = |key_mode: u32| {
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(key_mode))
            .unwrap();
        warden(&[
            "doctor",
            "--config",
            cfg,
            "--listen",
            "0.0.0.0:8443",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    };
    let (code, out, _) = tls(0o600);
    assert_eq!(code, 0, "{out}");
    assert!(
        rows(&out, "ok", "listen address")[0].contains("serves HTTPS"),
        "{out}"
    );
    let (code, out, _) = tls(0o644);
    assert_eq!(code, 1, "{out}");
    assert!(
        rows(&out, "serious", "listen address")[0].contains("chmod 600"),
        "{out}"
    );
}

/// A password in the store URL is as exposed as the config file holding it.
#[test]
fn a_store_password_in_a_readable_config_is_serious() {
    let dir = TempDir::new("warden-doctor-pg");
    let config = dir.0.join("warden.yaml");
    // Port 1: nothing answers, so the keys are not checked (a warning).
    write(
        &config,
        "storage: postgres://warden:hunter2-xyzzy@127.0.0.1:1/warden\nstorage_timeout_seconds: 1\nteams:\n  ml: {}\n",
        0o644,
    );
    let cfg = config.to_str().unwrap();
    let (code, out, err) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 1, "{out}{err}");
    let found = rows(&out, "serious", "store password");
    assert!(
        found.len() == 1
            && found[0].contains("readable by group or others (mode 0644)")
            && found[0].contains(&format!("chmod 600 {cfg}"))
            && found[0].contains("PGPASSWORD"),
        "{out}"
    );
    assert!(
        rows(&out, "warning", "warden keys")
            .first()
            .is_some_and(|r| r.contains("not checked")),
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, _) = warden(&["doctor", "--config", cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(
        rows(&out, "ok", "store password")[0].contains("mode 0600"),
        "{out}"
    );
}
