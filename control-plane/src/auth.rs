//! Bearer tokens for the REST API (admin token) and the node stream (the fleet-wide node
//! token; bootstrap tokens and node credentials are made with [`random_token`]).
//!
//! Only SHA-256 digests are kept, in memory and in the store. A token given on the command
//! line replaces the stored digest; with none given and none stored, a random token is
//! generated and printed once on stdout — it is never logged and cannot be read back.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::unix_ms;
use crate::store::{Store, StoreError};

/// The digest of a secret token.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares in constant time over the digests.
    pub fn matches(&self, presented: &str) -> bool {
        let other = Self::of(presented);
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// What every token the control plane makes starts with: a token is given on command
/// lines (`sluice-dp --token …`), where one that began with `-` (a URL-safe base64
/// character) would be read as an option; and a fixed prefix lets secret scanners
/// recognise a leaked one.
pub const TOKEN_PREFIX: &str = "sluice_";

/// A new secret token: [`TOKEN_PREFIX`], then 32 random bytes in URL-safe base64.
pub fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let mut token = String::from(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut token);
    token
}

/// Returns the digest for the secret `name`, creating or replacing it as described above.
pub async fn establish(
    store: &Store,
    name: &str,
    given: Option<&str>,
) -> Result<TokenDigest, StoreError> {
    if let Some(token) = given {
        let digest = TokenDigest::of(token);
        store
            .set_secret_digest(name, &digest.to_hex(), unix_ms())
            .await?;
        return Ok(digest);
    }
    if let Some(hex) = store.secret_digest(name).await? {
        if let Some(d) = TokenDigest::from_hex(&hex) {
            return Ok(d);
        }
    }
    let token = random_token();
    let digest = TokenDigest::of(&token);
    store
        .set_secret_digest(name, &digest.to_hex(), unix_ms())
        .await?;
    // Printed once, on stdout only, so the operator can copy it; never logged.
    println!("generated {name} (shown once, store it now): {token}");
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::{random_token, TokenDigest, TOKEN_PREFIX};

    #[test]
    fn a_token_never_reads_as_a_command_line_option() {
        for _ in 0..2000 {
            let t = random_token();
            assert!(t.starts_with(TOKEN_PREFIX), "{t}");
            assert_eq!(t.len(), TOKEN_PREFIX.len() + 43, "{t}");
            assert!(t[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn digest_roundtrip_and_match() {
        let d = TokenDigest::of("s3cret");
        assert!(d.matches("s3cret"));
        assert!(!d.matches("s3cret "));
        let back = TokenDigest::from_hex(&d.to_hex()).unwrap();
        assert!(back.matches("s3cret"));
        assert_eq!(format!("{d:?}"), "TokenDigest(..)");
    }
}
