//! Secrets at rest (provider API keys, trunk passwords): XChaCha20-Poly1305
//! with the 32-byte `api.encryption_key`. Stored form: `v1:` + base64 of
//! (24-byte random nonce ‖ ciphertext ‖ tag). Decrypted only in memory.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("not an encrypted secret (expected the v1: format)")]
    Format,
    #[error("secret does not decrypt with this key (wrong key or tampered)")]
    Decrypt,
    #[error("decrypted secret is not UTF-8")]
    Utf8,
}

/// Encrypts `plaintext` with a fresh random nonce.
pub fn encrypt(key: &[u8; 32], plaintext: &str) -> String {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    // Encryption of an in-memory buffer cannot fail for this AEAD (the only
    // error is a length overflow far beyond any request body).
    let sealed = cipher
        .encrypt(&nonce, plaintext.as_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    format!("{PREFIX}{}", STANDARD.encode(out))
}

/// Decrypts what [`encrypt`] produced with the same key.
pub fn decrypt(key: &[u8; 32], ciphertext: &str) -> Result<String, SecretError> {
    let body = ciphertext.strip_prefix(PREFIX).ok_or(SecretError::Format)?;
    let raw = STANDARD.decode(body).map_err(|_| SecretError::Format)?;
    if raw.len() < NONCE_LEN + 16 {
        return Err(SecretError::Format);
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::Format)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let plain = cipher
        .decrypt(&XNonce::from(nonce), sealed)
        .map_err(|_| SecretError::Decrypt)?;
    String::from_utf8(plain).map_err(|_| SecretError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fresh_nonce() {
        let key = [7u8; 32];
        let a = encrypt(&key, "sk-test-secret");
        let b = encrypt(&key, "sk-test-secret");
        assert_ne!(a, b, "each encryption uses a new nonce");
        assert!(!a.contains("sk-test-secret"));
        assert_eq!(decrypt(&key, &a).unwrap(), "sk-test-secret");
        assert_eq!(decrypt(&key, &encrypt(&key, "")).unwrap(), "");
    }

    #[test]
    fn wrong_key_tamper_and_garbage_fail() {
        let key = [7u8; 32];
        let sealed = encrypt(&key, "pw");
        assert_eq!(decrypt(&[8u8; 32], &sealed), Err(SecretError::Decrypt));
        let mut raw = STANDARD.decode(&sealed[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1:{}", STANDARD.encode(raw));
        assert_eq!(decrypt(&key, &tampered), Err(SecretError::Decrypt));
        assert_eq!(decrypt(&key, "plaintext"), Err(SecretError::Format));
        assert_eq!(decrypt(&key, "v1:!!!"), Err(SecretError::Format));
        assert_eq!(decrypt(&key, "v1:AAAA"), Err(SecretError::Format));
    }
}
