//! The upstream Vast.ai API key: the one credential Warden holds for the
//! marketplace behind the Vast door (teams hold Warden-issued keys).
//!
//! # What it guarantees
//!
//! - **Never in the config.** The key comes from an environment variable
//!   (`VAST_API_KEY` unless configured otherwise) or from a file.
//! - **Only a private file.** A key file that its group or others may
//!   access in any way (`mode & 0o077 != 0`) is refused, naming the file,
//!   its mode and the fix (`chmod 600 FILE`). The mode is checked on the
//!   opened file, so the file read is the file checked.
//! - **Never logged.** The key is held in a [`Secret`], whose `Debug` and
//!   `Display` print `[redacted]`; errors name where the key was looked for,
//!   never any of its text.
//! - **No surprises in the text.** Surrounding white space (a file's
//!   trailing newline) is dropped; an empty key, or one with white space or
//!   control characters inside, is refused, since it could only fail later
//!   as a confusing upstream 401.

use std::ffi::OsString;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The environment variable read when none is configured; the `vastai` CLI
/// and SDK read the same one.
pub const DEFAULT_ENV: &str = "VAST_API_KEY";

/// A secret string. `Debug` and `Display` print `[redacted]`; the text is
/// reached only through [`Secret::expose`], at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret made in this process (the embedded simulator's key).
    pub fn generated(text: String) -> Secret {
        Secret(text)
    }

    /// The secret's text, to put in an upstream request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the upstream key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKeySource {
    /// In this environment variable.
    Env(String),
    /// In this file, which only its owner may access (`chmod 600`).
    File(PathBuf),
}

impl Default for UpstreamKeySource {
    /// [`DEFAULT_ENV`].
    fn default() -> Self {
        UpstreamKeySource::Env(DEFAULT_ENV.to_owned())
    }
}

impl UpstreamKeySource {
    /// An environment variable source, if `name` is a variable name
    /// (letters, digits, `_`, not starting with a digit).
    pub fn env(name: &str) -> Result<Self, UpstreamKeyError> {
        let name = name.trim();
        let is_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name {
            Ok(UpstreamKeySource::Env(name.to_owned()))
        } else {
            Err(UpstreamKeyError::EnvName)
        }
    }

    /// Reads the key from the process environment or the file.
    pub fn load(&self) -> Result<Secret, UpstreamKeyError> {
        self.load_with_env(|var| std::env::var_os(var))
    }

    /// Reads the key, looking environment variables up with `env` (tests
    /// pass their own environment instead of changing the process's).
    pub fn load_with_env(
        &self,
        env: impl FnOnce(&str) -> Option<OsString>,
    ) -> Result<Secret, UpstreamKeyError> {
        match self {
            UpstreamKeySource::Env(var) => {
                let value =
                    env(var).ok_or_else(|| UpstreamKeyError::EnvMissing { var: var.clone() })?;
                let text = value
                    .into_string()
                    .map_err(|_| UpstreamKeyError::NotUnicode {
                        source_name: format!("environment variable `{var}`"),
                    })?;
                secret(&text, || format!("environment variable `{var}`"))
            }
            UpstreamKeySource::File(path) => read_private_file(path),
        }
    }
}

/// Checks and trims a key's text; `source` names where it came from.
fn secret(text: &str, source: impl Fn() -> String) -> Result<Secret, UpstreamKeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UpstreamKeyError::Empty {
            source_name: source(),
        });
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UpstreamKeyError::BadChars {
            source_name: source(),
        });
    }
    Ok(Secret(text.to_owned()))
}

/// Reads a key file that only its owner may access.
pub fn read_private_file(path: &Path) -> Result<Secret, UpstreamKeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read_error = |e: std::io::Error| UpstreamKeyError::FileRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    // The open file's own metadata: what is checked is what is read.
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(UpstreamKeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(UpstreamKeyError::FileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            UpstreamKeyError::NotUnicode {
                source_name: format!("key file `{}`", path.display()),
            }
        } else {
            read_error(e)
        }
    })?;
    secret(&text, || format!("key file `{}`", path.display()))
}

/// Why the upstream key could not be read. No variant holds the key or any
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamKeyError {
    /// The configured variable name is not one (it is not echoed: it may be
    /// the key itself, pasted in the wrong place).
    #[error("the upstream key's environment variable is not a variable name (letters, digits, `_`); name the variable that holds the key, e.g. `VAST_API_KEY`, not the key itself")]
    EnvName,
    /// The environment variable is not set.
    #[error("environment variable `{var}` is not set; export the Vast.ai API key in it, or keep the key in a file only you can read")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The key file cannot be opened or read.
    #[error("cannot read the upstream key file `{}`: {reason}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The path is a directory or something else that is not a file.
    #[error("the upstream key file `{}` is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The key file may be accessed by others than its owner.
    #[error("the upstream key file `{path}` is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = path.display())]
    FileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is empty (or only white space).
    #[error("the upstream key in {source_name} is empty")]
    Empty {
        /// Where it came from.
        source_name: String,
    },
    /// The key is not valid UTF-8.
    #[error("the upstream key in {source_name} is not valid UTF-8")]
    NotUnicode {
        /// Where it came from.
        source_name: String,
    },
    /// The key has white space or control characters inside it.
    #[error("the upstream key in {source_name} contains white space or control characters inside it (two keys, or a line break?)")]
    BadChars {
        /// Where it came from.
        source_name: String,
    },
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A directory of its own, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "warden-upstream-key-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str, text: &[u8], mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_owner_only_file_is_read_and_trimmed() {
        let dir = TempDir::new();
        let path = dir.file("vast.key", format!("{KEY}\n").as_bytes(), 0o600);
        let key = UpstreamKeySource::File(path).load().unwrap();
        assert_eq!(key.expose(), KEY);
        let path = dir.file("ro.key", format!("{KEY}\r\n").as_bytes(), 0o400);
        assert_eq!(read_private_file(&path).unwrap().expose(), KEY);
    }

    #[test]
    fn a_file_others_may_access_is_refused_with_the_fix() {
        let dir = TempDir::new();
        for mode in [0o640, 0o644, 0o604, 0o620, 0o601] {
            let path = dir.file(&format!("k{mode:o}"), KEY.as_bytes(), mode);
            let err = read_private_file(&path).unwrap_err();
            assert_eq!(
                err,
                UpstreamKeyError::FileMode {
                    path: path.clone(),
                    mode
                }
            );
            let msg = err.to_string();
            let shown = path.display();
            assert!(msg.contains(&format!("`{shown}`")), "{msg}");
            assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
            assert!(msg.contains(&format!("`chmod 600 {shown}`")), "{msg}");
            assert!(!msg.contains(KEY), "{msg}");
        }
    }

    #[test]
    fn empty_missing_and_odd_keys_are_refused() {
        let dir = TempDir::new();
        for text in ["", "\n", "  \n\n"] {
            let path = dir.file("empty.key", text.as_bytes(), 0o600);
            let err = read_private_file(&path).unwrap_err();
            assert!(matches!(err, UpstreamKeyError::Empty { .. }), "{err:?}");
            assert!(err.to_string().contains("empty.key"), "{err}");
        }
        let path = dir.file("two.key", format!("{KEY}\n{KEY}\n").as_bytes(), 0o600);
        let err = read_private_file(&path).unwrap_err();
        assert!(matches!(err, UpstreamKeyError::BadChars { .. }), "{err:?}");
        assert!(!err.to_string().contains(KEY), "{err}");
        let path = dir.file("bin.key", b"\xff\xfe", 0o600);
        assert!(matches!(
            read_private_file(&path),
            Err(UpstreamKeyError::NotUnicode { .. })
        ));

        let missing = dir.0.join("missing.key");
        let err = read_private_file(&missing).unwrap_err();
        assert!(matches!(err, UpstreamKeyError::FileRead { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"), "{err}");
        let err = read_private_file(&dir.0).unwrap_err();
        assert!(matches!(err, UpstreamKeyError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn the_environment_variable_is_configurable() {
        let source = UpstreamKeySource::default();
        assert_eq!(source, UpstreamKeySource::Env("VAST_API_KEY".to_owned()));
        let key = source
            .load_with_env(|var| (var == "VAST_API_KEY").then(|| format!(" {KEY}\n").into()))
            .unwrap();
        assert_eq!(key.expose(), KEY);

        let source = UpstreamKeySource::env("WARDEN_VAST_KEY").unwrap();
        let err = source.load_with_env(|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable `WARDEN_VAST_KEY` is not set; export the Vast.ai API key in it, or keep the key in a file only you can read"
        );
        let err = source.load_with_env(|_| Some("".into())).unwrap_err();
        assert!(matches!(err, UpstreamKeyError::Empty { .. }), "{err:?}");

        // A key pasted where the variable's name belongs is not echoed.
        let err = UpstreamKeySource::env(&format!("{KEY}-x")).unwrap_err();
        assert!(!err.to_string().contains(KEY), "{err}");
        assert!(UpstreamKeySource::env("9LIVES").is_err());
    }

    #[test]
    fn secrets_print_redacted() {
        let dir = TempDir::new();
        let path = dir.file("vast.key", KEY.as_bytes(), 0o600);
        let key = read_private_file(&path).unwrap();
        assert_eq!(format!("{key}"), "[redacted]");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&key)), "Some([redacted])");
    }
}
