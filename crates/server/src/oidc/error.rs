//! Why a bearer token was not accepted. Every message says what was wrong
//! and what to do; none repeats the token.

use crate::error::DoorError;

/// A token refused (401), or the issuer's keys out of reach (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Over the size cap; refused before parsing.
    #[error("the bearer token is {bytes} bytes, over the {limit}-byte limit (too large); an identity provider's token is a few KiB")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The cap.
        limit: usize,
    },
    /// Not a signed JWT (`header.payload.signature`).
    #[error("the bearer token is not a JWT ({0}); send an OIDC token from the identity provider, or a Warden key (`wdn_...`)")]
    Malformed(String),
    /// `alg: none`.
    #[error("the token is unsigned (`alg: none`), which is never accepted")]
    Unsigned,
    /// An `HS*` token.
    #[error("the token is signed with `{0}`, a shared-secret algorithm, which is never accepted")]
    Symmetric(String),
    /// An algorithm `identity.oidc.algorithms` does not list.
    #[error("the token is signed with `{alg}`, which `identity.oidc.algorithms` does not allow ({allowed})")]
    AlgorithmNotAllowed {
        /// The token's `alg`.
        alg: String,
        /// The configured list.
        allowed: String,
    },
    /// A `kid` the issuer does not publish.
    #[error("unknown signing key `{kid}`: {detail}")]
    UnknownKey {
        /// The token's `kid`.
        kid: String,
        /// When the keys were fetched, and when they may be again.
        detail: String,
    },
    /// No `kid`, and not exactly one key that could have signed it.
    #[error("the token names no signing key (`kid`), and the issuer publishes {candidates} keys for `{alg}`; Warden needs a `kid` to choose")]
    NoKeyId {
        /// The token's `alg`.
        alg: String,
        /// How many keys could fit.
        candidates: usize,
    },
    /// The key named cannot verify this algorithm.
    #[error("signing key `{kid}` is not usable for `{alg}` ({why})")]
    KeyMismatch {
        /// The key.
        kid: String,
        /// The token's `alg`.
        alg: String,
        /// Why not.
        why: String,
    },
    /// The signature does not verify.
    #[error("the token's signature does not verify with the issuer's key `{kid}` (a forged or altered token)")]
    BadSignature {
        /// The key tried.
        kid: String,
    },
    /// `exp` passed (beyond the leeway).
    #[error("the token expired at {at} (leeway {leeway_s} s); sign in again for a fresh one")]
    Expired {
        /// `exp`, RFC 3339.
        at: String,
        /// The leeway in seconds.
        leeway_s: u64,
    },
    /// `nbf` in the future (beyond the leeway).
    #[error("the token is not valid before {at} (`nbf`, leeway {leeway_s} s); check the clocks of this machine and the identity provider")]
    NotYetValid {
        /// `nbf`, RFC 3339.
        at: String,
        /// The leeway in seconds.
        leeway_s: u64,
    },
    /// `aud` is not Warden's.
    #[error("wrong audience: the token is for {got}, not `{want}` (`identity.oidc.audience`)")]
    WrongAudience {
        /// The token's `aud`, described.
        got: String,
        /// The configured audience.
        want: String,
    },
    /// `iss` is not the configured issuer.
    #[error("wrong issuer: the token was issued by {got}, not `{want}` (`identity.oidc.issuer`)")]
    WrongIssuer {
        /// The token's `iss`, described.
        got: String,
        /// The configured issuer.
        want: String,
    },
    /// A claim that must be there is not.
    #[error("the token has no `{claim}` claim{hint}")]
    MissingClaim {
        /// The claim.
        claim: String,
        /// What it is for.
        hint: String,
    },
    /// A claim of the wrong JSON type.
    #[error("the token's `{claim}` claim is {found}, not {want}{hint}")]
    ClaimType {
        /// The claim.
        claim: String,
        /// What it should be.
        want: &'static str,
        /// What it is.
        found: String,
        /// Which setting names it.
        hint: String,
    },
    /// `email_verified: false` while the e-mail names the user.
    #[error("the token's e-mail address is not verified (`email_verified: false`), so it cannot name the user; verify it at the identity provider")]
    EmailNotVerified,
    /// The discovery document or the keys cannot be fetched.
    #[error("the identity provider's signing keys cannot be fetched, so no OIDC token can be checked: {0}")]
    KeysUnavailable(String),
}

impl From<OidcError> for DoorError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::KeysUnavailable(_) => DoorError::Unavailable(e.to_string()),
            other => DoorError::Unauthorized(other.to_string()),
        }
    }
}
