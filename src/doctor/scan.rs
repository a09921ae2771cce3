//! `warden doctor --scan PATH`: keys committed to a git repository.
//!
//! git does the searching: `git grep` over the tracked files of the work
//! tree, `git log --all -G` over the history of every ref. Both get the same
//! extended regular expression ([`git_pattern`]): a Warden key, or 64
//! lowercase hex characters assigned where an API key usually is
//! (`VAST_API_KEY=...`, `api_key: ...`, `vastai set api-key ...`,
//! `Bearer ...`). Rust then reads git's output with the same patterns to
//! name each key without showing it, and to keep only the added lines of
//! the patches `git log -p` prints.
//!
//! # What it guarantees
//!
//! - **No secret is printed**: a Warden key is shown as `wdn_<id>_…` (the
//!   id grants nothing), a Vast key as its first four characters and its
//!   length. The lines git prints are read, never echoed, nor is git's
//!   output about them.
//! - **Bounded**: each git command has a time-out and an output cap
//!   ([`GREP_LIMITS`], [`LOG_LIMITS`]); a scan cut short says so in a
//!   warning row, with what it found until then.
//! - **No repository-configured programs run**: external diff drivers,
//!   textconv filters and the fsmonitor hook are switched off, so scanning
//!   a repository does not run commands its `.git/config` names.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;

use super::{shell_word, Finding};

const CHECK: &str = "git secrets";

/// A Warden key; group 1 is its public id.
const WARDEN_KEY: &str = "wdn_([0-9a-f]{16})_[0-9a-f]{64}";

/// A Vast-looking API key where keys are usually assigned; group 1 is the
/// key. Written in the subset of syntax that POSIX extended regular
/// expressions (git) and the `regex` crate share: no `\s`, no `(?:`.
const VAST_KEY: &str = concat!(
    "(",
    "[Aa][Pp][Ii][_-]?[Kk][Ee][Yy]|[Vv][Aa][Ss][Tt][_-]?[Kk][Ee][Yy]|[Bb][Ee][Aa][Rr][Ee][Rr]",
    ")",
    "[\"']?[[:space:]]*[:=]?[[:space:]]*[\"']?",
    "([0-9a-f]{64})",
    "([^0-9A-Za-z]|$)"
);
/// The group of [`VAST_KEY`] holding the key.
const VAST_KEY_GROUP: usize = 2;

/// What git is asked to find.
fn git_pattern() -> String {
    format!("{WARDEN_KEY}|{VAST_KEY}")
}

#[expect(
    clippy::expect_used,
    reason = "constant patterns, compiled in the unit tests"
)]
static WARDEN_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(WARDEN_KEY).expect("the Warden key pattern compiles"));
#[expect(
    clippy::expect_used,
    reason = "constant patterns, compiled in the unit tests"
)]
static VAST_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(VAST_KEY).expect("the Vast key pattern compiles"));

/// Bounds on one git command.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long it may run before it is killed.
    pub time: Duration,
    /// How much of its output is read.
    pub bytes: u64,
}

/// `git rev-parse`.
const PROBE_LIMITS: Limits = Limits {
    time: Duration::from_secs(10),
    bytes: 4096,
};
/// `git grep` over the work tree.
pub const GREP_LIMITS: Limits = Limits {
    time: Duration::from_secs(60),
    bytes: 16 * 1024 * 1024,
};
/// `git log -p` over the history.
pub const LOG_LIMITS: Limits = Limits {
    time: Duration::from_secs(120),
    bytes: 64 * 1024 * 1024,
};

/// What a bounded git command gave.
struct GitOutput {
    stdout: Vec<u8>,
    stderr: String,
    /// `None` when it was killed at its time-out.
    status: Option<ExitStatus>,
    /// Its output went past the cap (the rest was not read).
    truncated: bool,
}

impl GitOutput {
    /// git's own words for a failure: the first line of its stderr.
    fn complaint(&self) -> String {
        let line = self.stderr.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            match self.status {
                Some(s) => format!("git exited with {s}"),
                None => "git timed out".to_owned(),
            }
        } else {
            crate::table::one_line(line)
        }
    }
}

/// Runs `git -C repo ARGS`, killing it after `limits.time` and reading at
/// most `limits.bytes` of its output.
fn git(repo: &Path, args: &[&str], limits: Limits) -> std::io::Result<GitOutput> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "--no-pager",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.quotePath=false",
        ])
        .args(args)
        // Read-only: no index refresh written behind the scan's back.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let cap = limits.bytes;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both pipes are drained at once, so git never blocks on a full one.
    // Stopping at the cap closes the pipe: git then ends on EPIPE.
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(cap.saturating_add(1)).read_to_end(&mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(64 * 1024).read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limits.time;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    let truncated = stdout.len() as u64 > cap;
    if truncated {
        // Keep whole lines only.
        let keep = stdout
            .iter()
            .take(usize::try_from(cap).unwrap_or(usize::MAX))
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        stdout.truncate(keep);
    }
    Ok(GitOutput {
        stdout,
        stderr,
        status,
        truncated,
    })
}

/// A key found in a line, named without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    /// A Warden key, by its id.
    Warden { id: String },
    /// A Vast-looking key, by its first four characters and its length.
    Vast { start: String, len: usize },
}

impl Found {
    fn describe(&self) -> String {
        match self {
            Found::Warden { id } => format!("Warden key wdn_{id}_… (id {id})"),
            Found::Vast { start, len } => {
                format!("Vast.ai-looking API key {start}… ({len} characters)")
            }
        }
    }

    fn fix(&self, config: &Path) -> String {
        match self {
            Found::Warden { id } => format!(
                "treat it as leaked: warden keys revoke --config {} {id} (or rotate it), then delete it from the repository; rewriting history does not unleak it",
                shell_word(config)
            ),
            Found::Vast { .. } => "treat it as leaked: make a new key in the Vast.ai console and delete this one there, then delete it from the repository; rewriting history does not unleak it".to_owned(),
        }
    }
}

/// The keys in one line: each with the text that identifies it (kept in
/// memory to merge places, never printed) and how it is shown.
fn keys_in(line: &str) -> Vec<(String, Found)> {
    let mut out = Vec::new();
    for c in WARDEN_RE.captures_iter(line) {
        if let (Some(all), Some(id)) = (c.get(0), c.get(1)) {
            out.push((
                all.as_str().to_owned(),
                Found::Warden {
                    id: id.as_str().to_owned(),
                },
            ));
        }
    }
    for c in VAST_RE.captures_iter(line) {
        if let Some(key) = c.get(VAST_KEY_GROUP) {
            let key = key.as_str();
            out.push((
                key.to_owned(),
                Found::Vast {
                    start: key.chars().take(4).collect(),
                    len: key.chars().count(),
                },
            ));
        }
    }
    out
}

/// Every key found in a repository, each with the places it was seen.
#[derive(Debug, Default)]
struct Leaks {
    order: Vec<(Found, Vec<String>)>,
    index: HashMap<String, usize>,
}

impl Leaks {
    fn add(&mut self, line: &str, place: impl Fn() -> String) {
        for (secret, found) in keys_in(line) {
            let i = *self.index.entry(secret).or_insert_with(|| {
                self.order.push((found, Vec::new()));
                self.order.len() - 1
            });
            if let Some((_, places)) = self.order.get_mut(i) {
                places.push(place());
            }
        }
    }
}

/// `git grep -z -n` output: `path\0line\0text\n` per match.
fn read_grep(stdout: &[u8], leaks: &mut Leaks) {
    for record in String::from_utf8_lossy(stdout).lines() {
        let mut parts = record.splitn(3, '\0');
        if let (Some(path), Some(line), Some(text)) = (parts.next(), parts.next(), parts.next()) {
            leaks.add(text, || format!("work tree {path}:{line}"));
        }
    }
}

/// `git log -p --unified=0 --format='commit %H'` output: the added lines of
/// each patch, with the commit, file and line they were added at. Removed
/// lines are skipped: each was added by an earlier commit.
fn read_log(stdout: &[u8], leaks: &mut Leaks) {
    let (mut commit, mut file) = (String::new(), String::new());
    let (mut line_no, mut in_header) = (0_u64, false);
    for line in String::from_utf8_lossy(stdout).lines() {
        if let Some(hash) = line.strip_prefix("commit ") {
            commit = hash.chars().take(12).collect();
            in_header = false;
        } else if line.starts_with("diff --git ") {
            in_header = true;
            file.clear();
        } else if in_header {
            if let Some(name) = line.strip_prefix("+++ ") {
                file = name
                    .trim_matches('"')
                    .strip_prefix("b/")
                    .unwrap_or(name)
                    .to_owned();
            } else if let Some(hunk) = line.strip_prefix("@@ ") {
                in_header = false;
                line_no = hunk_start(hunk);
            }
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            line_no = hunk_start(hunk);
        } else if let Some(added) = line.strip_prefix('+') {
            leaks.add(added, || format!("commit {commit} {file}:{line_no}"));
            line_no += 1;
        }
    }
}

/// The first new line of a hunk header `-a,b +c,d @@`.
fn hunk_start(hunk: &str) -> u64 {
    hunk.split(' ')
        .find_map(|part| part.strip_prefix('+'))
        .and_then(|range| range.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// At most this many places are listed per key.
const MAX_PLACES: usize = 4;

/// Scans one repository: its work tree's tracked files, then its history.
pub fn scan(path: &Path, config: &Path) -> Vec<Finding> {
    let shown = path.display();
    let probe = git(path, &["rev-parse", "--is-inside-work-tree"], PROBE_LIMITS);
    match probe {
        Ok(out) if out.status.is_some_and(|s| s.success()) => {}
        Ok(out) => {
            return vec![Finding::warning(
                CHECK,
                format!(
                    "`{shown}` is not a git work tree, so it was not scanned ({})",
                    out.complaint()
                ),
                "give the directory of a git clone".to_owned(),
            )]
        }
        Err(e) => {
            return vec![Finding::warning(
                CHECK,
                format!("`{shown}` was not scanned: cannot run git: {e}"),
                "install git, or scan on a machine that has it".to_owned(),
            )]
        }
    }
    let pattern = git_pattern();
    let mut leaks = Leaks::default();
    let mut problems = Vec::new();
    let grep = git(
        path,
        &["grep", "-I", "-n", "-z", "--no-color", "-E", "-e", &pattern],
        GREP_LIMITS,
    );
    match grep {
        // 1: no match.
        Ok(out)
            if out
                .status
                .is_some_and(|s| s.code() == Some(0) || s.code() == Some(1)) =>
        {
            read_grep(&out.stdout, &mut leaks);
            if out.truncated {
                problems.push(format!(
                    "the work tree search stopped after {} MiB of matches",
                    GREP_LIMITS.bytes >> 20
                ));
            }
        }
        Ok(out) => {
            read_grep(&out.stdout, &mut leaks);
            problems.push(match out.status {
                None => format!(
                    "the work tree search timed out after {} s",
                    GREP_LIMITS.time.as_secs()
                ),
                Some(_) => format!("the work tree search failed: {}", out.complaint()),
            });
        }
        Err(e) => problems.push(format!("cannot run git grep: {e}")),
    }
    let g = format!("-G{pattern}");
    let log = git(
        path,
        &[
            "log",
            "--all",
            &g,
            "-p",
            "--unified=0",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--no-show-signature",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--format=commit %H",
        ],
        LOG_LIMITS,
    );
    match log {
        Ok(out) => {
            read_log(&out.stdout, &mut leaks);
            match out.status {
                None => problems.push(format!(
                    "the history search timed out after {} s",
                    LOG_LIMITS.time.as_secs()
                )),
                Some(_) if out.truncated => problems.push(format!(
                    "the history search stopped after {} MiB of patches",
                    LOG_LIMITS.bytes >> 20
                )),
                Some(s) if !s.success() => {
                    problems.push(format!("the history search failed: {}", out.complaint()))
                }
                Some(_) => {}
            }
        }
        Err(e) => problems.push(format!("cannot run git log: {e}")),
    }

    let mut out: Vec<Finding> = leaks
        .order
        .into_iter()
        .map(|(found, places)| {
            let mut listed: Vec<String> = places.iter().take(MAX_PLACES).cloned().collect();
            if places.len() > MAX_PLACES {
                listed.push(format!("and {} more", places.len() - MAX_PLACES));
            }
            Finding::serious(
                CHECK,
                format!("{} in `{shown}`: {}", found.describe(), listed.join("; ")),
                found.fix(config),
            )
        })
        .collect();
    for problem in problems {
        out.push(Finding::warning(
            CHECK,
            format!("`{shown}`: {problem}; what it found until then is listed"),
            "scan it with a dedicated secret scanner (gitleaks, trufflehog)".to_owned(),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            CHECK,
            format!("`{shown}`: no Warden or Vast.ai keys in the tracked files or the history of any ref"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";
    const SECRET: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    const VAST: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn keys_are_named_without_their_secret() {
        let key = format!("wdn_{ID}_{SECRET}");
        let found = keys_in(&format!("export WARDEN_KEY={key} # ci"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, key);
        let shown = found[0].1.describe();
        assert_eq!(shown, format!("Warden key wdn_{ID}_… (id {ID})"));
        assert!(!shown.contains(SECRET));

        for line in [
            format!("VAST_API_KEY={VAST}"),
            format!("export VAST_API_KEY=\"{VAST}\""),
            format!("  api_key: {VAST}"),
            format!("{{\"api_key\": \"{VAST}\"}}"),
            format!("vastai set api-key {VAST}"),
            format!("curl -H 'Authorization: Bearer {VAST}' https://console.vast.ai"),
            format!("apiKey = '{VAST}'"),
            format!("vast_key={VAST}"),
        ] {
            let found = keys_in(&line);
            assert_eq!(found.len(), 1, "{line}: {found:?}");
            assert_eq!(found[0].0, VAST, "{line}");
            let shown = found[0].1.describe();
            assert_eq!(shown, "Vast.ai-looking API key ab12… (64 characters)");
        }
    }

    #[test]
    fn other_hex_is_not_a_key() {
        for line in [
            format!("checksum = \"{VAST}\""),
            format!("sha256: {VAST}"),
            format!("api_key: {VAST}ff"),
            format!("api_key: {}", VAST.to_uppercase()),
            "api_key_file: /etc/warden/vast.key".to_owned(),
            format!("wdn_{ID}_{}", &SECRET[..60]),
        ] {
            assert!(keys_in(&line).is_empty(), "{line}");
        }
    }

    #[test]
    fn git_and_rust_read_the_same_pattern() {
        // Both alternatives compile in the `regex` crate as one pattern,
        // and the Vast group is where the key is.
        let whole = Regex::new(&git_pattern()).unwrap();
        assert!(whole.is_match(&format!("api_key={VAST}")));
        assert!(whole.is_match(&format!("wdn_{ID}_{SECRET}")));
        let line = format!("api_key={VAST};");
        let c = VAST_RE.captures(&line).unwrap();
        assert_eq!(c.get(VAST_KEY_GROUP).unwrap().as_str(), VAST);
        for banned in ["\\s", "(?", "\\d", "\\b"] {
            assert!(!git_pattern().contains(banned), "{banned}");
        }
    }

    #[test]
    fn grep_and_log_output_give_places() {
        let key = format!("wdn_{ID}_{SECRET}");
        let mut leaks = Leaks::default();
        read_grep(
            format!("dir/a b.env\u{0}3\u{0}KEY={key}\nc.yaml\u{0}1\u{0}api_key: {VAST}\n")
                .as_bytes(),
            &mut leaks,
        );
        let log = format!(
            "commit 2222222222222222222222222222222222222222\n\ndiff --git a/x.env b/x.env\ndeleted file mode 100644\n--- a/x.env\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-KEY={key}\n-other\ncommit 1111111111111111111111111111111111111111\n\ndiff --git a/x.env b/x.env\nnew file mode 100644\n--- /dev/null\n+++ b/x.env\n@@ -0,0 +1,2 @@\n+++ not a header {key}\n+KEY={key}\n"
        );
        read_log(log.as_bytes(), &mut leaks);
        assert_eq!(leaks.order.len(), 2, "{leaks:?}");
        let (found, places) = &leaks.order[0];
        assert_eq!(found, &Found::Warden { id: ID.to_owned() });
        assert_eq!(
            places,
            &[
                "work tree dir/a b.env:3",
                "commit 111111111111 x.env:1",
                "commit 111111111111 x.env:2"
            ]
        );
        assert_eq!(leaks.order[1].1, ["work tree c.yaml:1"]);
    }

    #[test]
    fn hunk_headers_give_the_new_line() {
        assert_eq!(hunk_start("-0,0 +1,2 @@"), 1);
        assert_eq!(hunk_start("-3 +7 @@ fn x()"), 7);
        assert_eq!(hunk_start("garbage"), 0);
    }
}
