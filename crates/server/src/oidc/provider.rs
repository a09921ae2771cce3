//! jsonwebtoken's cryptography, done by `ring` (which rustls already
//! builds), so that no second crypto stack is compiled in.
//!
//! jsonwebtoken 10 parses tokens and validates claims itself and asks a
//! process-wide [`CryptoProvider`] for signatures. Verification covers the
//! asymmetric JWS algorithms (`RS*`, `PS*`, `ES256`, `ES384`, `EdDSA`);
//! shared-secret (`HS*`) verification is refused outright, since Warden
//! never accepts such tokens. Signing (`ES*`, `RS*`, `PS*`, `HS*`) exists
//! for the tests, which mint tokens with jsonwebtoken's encoder; Warden
//! itself signs nothing.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as sig;

/// The provider; [`install`] makes it the process default.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    // Used only to derive JWKs from private keys, which Warden never does.
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes `ring` jsonwebtoken's provider for this process. Call it before
/// any other use of jsonwebtoken: its first use otherwise fixes a provider
/// that fails every signature. Later calls do nothing.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which this Once
        // and the rule above rule out.
        let _ = PROVIDER.install_default();
    });
}

/// An asymmetric algorithm's verification in ring, or `None` (`HS*`).
fn verification(alg: Algorithm) -> Option<&'static dyn sig::VerificationAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        Algorithm::EdDSA => &sig::ED25519,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
    })
}

/// The key family an algorithm needs.
pub(super) fn family(alg: Algorithm) -> AlgorithmFamily {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => AlgorithmFamily::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => AlgorithmFamily::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => AlgorithmFamily::Ec,
        Algorithm::EdDSA => AlgorithmFamily::Ed,
    }
}

/// The RSA parameters of an `RS*`/`PS*` algorithm.
fn rsa_parameters(alg: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let checked = match (self.key.kind(), rsa_parameters(self.alg)) {
            // A JWK's RSA key: its modulus and exponent.
            (DecodingKeyKind::RsaModulusExponent { n, e }, Some(params)) => {
                sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature)
            }
            (DecodingKeyKind::SecretOrDer(bytes), _) => match verification(self.alg) {
                Some(alg) => sig::UnparsedPublicKey::new(alg, bytes).verify(msg, signature),
                None => Err(ring::error::Unspecified),
            },
            (DecodingKeyKind::RsaModulusExponent { .. }, None) => Err(ring::error::Unspecified),
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    if verification(*alg).is_none() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    if key.family() != family(*alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

struct RingSigner {
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        let failed = |_| signature::Error::new();
        let ecdsa = |alg| -> Result<Vec<u8>, signature::Error> {
            let pair = sig::EcdsaKeyPair::from_pkcs8(alg, self.key.inner(), &rng)
                .map_err(|_| signature::Error::new())?;
            Ok(pair.sign(&rng, msg).map_err(failed)?.as_ref().to_vec())
        };
        let rsa = |alg: &'static dyn sig::RsaEncoding| -> Result<Vec<u8>, signature::Error> {
            let pair = sig::RsaKeyPair::from_der(self.key.inner())
                .or_else(|_| sig::RsaKeyPair::from_pkcs8(self.key.inner()))
                .map_err(|_| signature::Error::new())?;
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(alg, &rng, msg, &mut out).map_err(failed)?;
            Ok(out)
        };
        let hmac = |alg| -> Result<Vec<u8>, signature::Error> {
            let secret = self
                .key
                .try_get_hmac_secret()
                .map_err(|_| signature::Error::new())?;
            let key = ring::hmac::Key::new(alg, secret);
            Ok(ring::hmac::sign(&key, msg).as_ref().to_vec())
        };
        match self.alg {
            Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
            Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512),
            Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
            Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
            Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
            Algorithm::EdDSA => Err(signature::Error::new()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Ok(Box::new(RingSigner {
        alg: *alg,
        key: key.clone(),
    }))
}
