//! Credentials Warden holds: the Vast.ai API key, the SkyPilot
//! service-account token, and every later one (OIDC client secrets, TLS
//! keys). One type holds them, one loader reads them.
//!
//! # What it guarantees
//!
//! - **Never in the config.** A credential comes from an environment
//!   variable or from a file; the config names where.
//! - **Only a private file.** A file that its group or others may access in
//!   any way (`mode & 0o077 != 0`) is refused, naming the file, its mode and
//!   the fix (`chmod 600 FILE`). The mode is checked on the opened file
//!   (open, then fstat, then read: no second lookup by path), so the file
//!   read is the file checked. A file over [`MAX_SECRET_FILE_BYTES`] is
//!   refused before it is read.
//! - **Never logged.** The text is held in a [`Secret`], whose `Debug` and
//!   `Display` print `[redacted]`; errors name where the credential was
//!   looked for, never any of its text.
//! - **No surprises in the text.** Surrounding white space (a file's
//!   trailing newline) is dropped; an empty credential, or one with white
//!   space or control characters inside, is refused, since it could only
//!   fail later as a confusing 401.

use std::ffi::OsString;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The largest credential file read (keys and tokens are well under 1 KiB;
/// a PEM private key a few KiB).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// What a credential is, for messages: its name and the environment
/// variable suggested for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// E.g. `Vast.ai API key`.
    pub noun: &'static str,
    /// E.g. `VAST_API_KEY`.
    pub example_env: &'static str,
}

/// A secret string. `Debug` and `Display` print `[redacted]`; the text is
/// reached only through [`Secret::expose`], at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret made in this process (the embedded simulator's key).
    pub fn generated(text: String) -> Secret {
        Secret(text)
    }

    /// The secret's text, to put in an outgoing request.
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

/// Where a credential is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// In this environment variable.
    Env(String),
    /// In this file, which only its owner may access (`chmod 600`).
    File(PathBuf),
}

impl SecretSource {
    /// An environment variable source, if `name` is a variable name
    /// (letters, digits, `_`, not starting with a digit).
    pub fn env(name: &str, what: Credential) -> Result<Self, SecretError> {
        let name = name.trim();
        let is_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_name {
            Ok(SecretSource::Env(name.to_owned()))
        } else {
            Err(SecretError::EnvName { what })
        }
    }

    /// A file source; a relative path is resolved against `base` (the
    /// config file's directory).
    pub fn file(path: PathBuf, base: &Path) -> Self {
        SecretSource::File(if path.is_absolute() {
            path
        } else {
            base.join(path)
        })
    }

    /// Reads the credential from the process environment or the file.
    pub fn load(&self, what: Credential) -> Result<Secret, SecretError> {
        self.load_with_env(what, |var| std::env::var_os(var))
    }

    /// Reads the credential, looking environment variables up with `env`
    /// (tests pass their own environment instead of changing the
    /// process's).
    pub fn load_with_env(
        &self,
        what: Credential,
        env: impl FnOnce(&str) -> Option<OsString>,
    ) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Env(var) => {
                let value = env(var).ok_or_else(|| SecretError::EnvMissing {
                    what,
                    var: var.clone(),
                })?;
                let source = || format!("environment variable `{var}`");
                let text = value.into_string().map_err(|_| SecretError::NotUnicode {
                    what,
                    source_name: source(),
                })?;
                secret(&text, what, source)
            }
            SecretSource::File(path) => read_private_file(path, what),
        }
    }
}

/// Checks and trims a credential's text; `source` names where it came from.
fn secret(
    text: &str,
    what: Credential,
    source: impl Fn() -> String,
) -> Result<Secret, SecretError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty {
            what,
            source_name: source(),
        });
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SecretError::BadChars {
            what,
            source_name: source(),
        });
    }
    Ok(Secret(text.to_owned()))
}

/// Reads a credential file that only its owner may access: open, check the
/// open file's mode and size, read.
pub fn read_private_file(path: &Path, what: Credential) -> Result<Secret, SecretError> {
    let text = read_private_text(path, what)?;
    secret(&text, what, || format!("file `{}`", path.display()))
}

/// The text of a file that only its owner may access (a PEM key, a
/// credential), checked on the opened file and bounded by
/// [`MAX_SECRET_FILE_BYTES`].
pub fn read_private_text(path: &Path, what: Credential) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt as _;
    let read_error = |e: std::io::Error| SecretError::FileRead {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // The open file's own metadata: what is checked is what is read.
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            what,
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::FileMode {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: meta.len(),
        });
    }
    let mut text = String::new();
    // Bounded again while reading: the file may grow after the fstat.
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SecretError::NotUnicode {
                    what,
                    source_name: format!("file `{}`", path.display()),
                }
            } else {
                read_error(e)
            }
        })?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretError::TooLarge {
            what,
            path: path.to_path_buf(),
            bytes: text.len() as u64,
        });
    }
    Ok(text)
}

/// Why a credential could not be read. No variant holds the credential or
/// any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The configured variable name is not one (it is not echoed: it may be
    /// the credential itself, pasted in the wrong place).
    #[error("not an environment variable name (letters, digits, `_`); name the variable that holds the {}, e.g. `{}`, not the {} itself", what.noun, what.example_env, what.noun)]
    EnvName {
        /// What was being read.
        what: Credential,
    },
    /// The environment variable is not set.
    #[error("environment variable `{var}` is not set; export the {} in it, or keep it in a file only you can read", what.noun)]
    EnvMissing {
        /// What was being read.
        what: Credential,
        /// The variable's name.
        var: String,
    },
    /// The file cannot be opened or read.
    #[error("cannot read the {} file `{}`: {reason}", what.noun, path.display())]
    FileRead {
        /// What was being read.
        what: Credential,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The path is a directory or something else that is not a file.
    #[error("the {} file `{}` is not a regular file", what.noun, path.display())]
    NotAFile {
        /// What was being read.
        what: Credential,
        /// The path.
        path: PathBuf,
    },
    /// The file may be accessed by others than its owner.
    #[error("the {} file `{path}` is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`", what.noun, path = path.display())]
    FileMode {
        /// What was being read.
        what: Credential,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than any credential.
    #[error("the {} file `{}` is {bytes} bytes, more than the {MAX_SECRET_FILE_BYTES} a credential file may hold; is it the right file?", what.noun, path.display())]
    TooLarge {
        /// What was being read.
        what: Credential,
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The credential is empty (or only white space).
    #[error("the {} in {source_name} is empty", what.noun)]
    Empty {
        /// What was being read.
        what: Credential,
        /// Where it came from.
        source_name: String,
    },
    /// The credential is not valid UTF-8.
    #[error("the {} in {source_name} is not valid UTF-8", what.noun)]
    NotUnicode {
        /// What was being read.
        what: Credential,
        /// Where it came from.
        source_name: String,
    },
    /// The credential has white space or control characters inside it.
    #[error("the {} in {source_name} contains white space or control characters inside it (two keys, or a line break?)", what.noun)]
    BadChars {
        /// What was being read.
        what: Credential,
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
                "warden-secret-{}-{}",
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

    const WHAT: Credential = Credential {
        noun: "Vast.ai API key",
        example_env: "VAST_API_KEY",
    };

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_owner_only_file_is_read_and_trimmed() {
        let dir = TempDir::new();
        let path = dir.file("vast.key", format!("{KEY}\n").as_bytes(), 0o600);
        let key = SecretSource::File(path).load(WHAT).unwrap();
        assert_eq!(key.expose(), KEY);
        let path = dir.file("ro.key", format!("{KEY}\r\n").as_bytes(), 0o400);
        assert_eq!(read_private_file(&path, WHAT).unwrap().expose(), KEY);
    }

    #[test]
    fn a_file_others_may_access_is_refused_with_the_fix() {
        let dir = TempDir::new();
        for mode in [0o640, 0o644, 0o604, 0o620, 0o601] {
            let path = dir.file(&format!("k{mode:o}"), KEY.as_bytes(), mode);
            let err = read_private_file(&path, WHAT).unwrap_err();
            assert_eq!(
                err,
                SecretError::FileMode {
                    what: WHAT,
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
            let err = read_private_file(&path, WHAT).unwrap_err();
            assert!(matches!(err, SecretError::Empty { .. }), "{err:?}");
            assert!(err.to_string().contains("empty.key"), "{err}");
        }
        let path = dir.file("two.key", format!("{KEY}\n{KEY}\n").as_bytes(), 0o600);
        let err = read_private_file(&path, WHAT).unwrap_err();
        assert!(matches!(err, SecretError::BadChars { .. }), "{err:?}");
        assert!(!err.to_string().contains(KEY), "{err}");
        let path = dir.file("bin.key", b"\xff\xfe", 0o600);
        assert!(matches!(
            read_private_file(&path, WHAT),
            Err(SecretError::NotUnicode { .. })
        ));

        let missing = dir.0.join("missing.key");
        let err = read_private_file(&missing, WHAT).unwrap_err();
        assert!(matches!(err, SecretError::FileRead { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.key"), "{err}");
        let err = read_private_file(&dir.0, WHAT).unwrap_err();
        assert!(matches!(err, SecretError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn the_environment_variable_is_configurable() {
        let source = SecretSource::env("VAST_API_KEY", WHAT).unwrap();
        let key = source
            .load_with_env(WHAT, |var| {
                (var == "VAST_API_KEY").then(|| format!(" {KEY}\n").into())
            })
            .unwrap();
        assert_eq!(key.expose(), KEY);

        let source = SecretSource::env("WARDEN_VAST_KEY", WHAT).unwrap();
        let err = source.load_with_env(WHAT, |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable `WARDEN_VAST_KEY` is not set; export the Vast.ai API key in it, or keep it in a file only you can read"
        );
        let err = source.load_with_env(WHAT, |_| Some("".into())).unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err:?}");

        // A key pasted where the variable's name belongs is not echoed.
        let err = SecretSource::env(&format!("{KEY}-x"), WHAT).unwrap_err();
        assert!(!err.to_string().contains(KEY), "{err}");
        assert!(SecretSource::env("9LIVES", WHAT).is_err());
    }

    #[test]
    fn large_files_and_relative_paths() {
        let dir = TempDir::new();
        let big = "k".repeat(MAX_SECRET_FILE_BYTES as usize + 1);
        let path = dir.file("big.key", big.as_bytes(), 0o600);
        let err = read_private_file(&path, WHAT).unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err:?}");
        assert!(!err.to_string().contains("kkkk"), "{err}");
        assert_eq!(
            SecretSource::file(PathBuf::from("k"), Path::new("/etc/warden")),
            SecretSource::File(PathBuf::from("/etc/warden/k"))
        );
        assert_eq!(
            SecretSource::file(PathBuf::from("/k"), Path::new("/etc/warden")),
            SecretSource::File(PathBuf::from("/k"))
        );
    }

    #[test]
    fn secrets_print_redacted() {
        let dir = TempDir::new();
        let path = dir.file("vast.key", KEY.as_bytes(), 0o600);
        let key = read_private_file(&path, WHAT).unwrap();
        assert_eq!(format!("{key}"), "[redacted]");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&key)), "Some([redacted])");
    }
}
