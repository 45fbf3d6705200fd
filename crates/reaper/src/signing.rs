//! The receipts' Ed25519 key and signature, for `reaper receipt` and `GET
//! /v1/jobs/{id}/receipt`. The private key's seed comes only from the environment:
//! `REAPER_RECEIPT_KEY` (64 hex digits) or `REAPER_RECEIPT_KEY_FILE` (a file holding them),
//! read when a receipt is signed. Never from the configuration file, which is shared, printed by
//! `reaper config check` and kept in repositories.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use reaper_core::receipt::{ReceiptBody, SignedReceipt};

/// The environment variable holding the signing key's seed (hex).
pub(crate) const KEY_ENV: &str = "REAPER_RECEIPT_KEY";
/// The environment variable naming a file that holds the seed (hex).
pub(crate) const KEY_FILE_ENV: &str = "REAPER_RECEIPT_KEY_FILE";

/// The signing key, from [`KEY_ENV`] or the file [`KEY_FILE_ENV`] names; the error says which
/// variable to set and what is wrong.
pub(crate) fn signing_key() -> Result<SigningKey, String> {
    let seed = match (std::env::var(KEY_ENV), std::env::var(KEY_FILE_ENV)) {
        (Ok(seed), _) => seed,
        (Err(_), Ok(path)) => std::fs::read_to_string(&path)
            .map_err(|error| format!("{KEY_FILE_ENV}: cannot read {path}: {error}"))?,
        (Err(_), Err(_)) => {
            return Err(format!(
                "no receipt signing key: set {KEY_ENV} to the Ed25519 seed (64 hex digits) or \
                 {KEY_FILE_ENV} to a file holding it; the configuration file never holds it"
            ));
        }
    };
    Ok(SigningKey::from_bytes(&fixed_bytes(seed.trim(), KEY_ENV)?))
}

/// `body` signed with `key`.
pub(crate) fn sign(key: &SigningKey, body: ReceiptBody) -> SignedReceipt {
    let signature = key.sign(&body.signed_bytes());
    SignedReceipt {
        receipt: body,
        algorithm: "ed25519".into(),
        public_key: to_hex(key.verifying_key().as_bytes()),
        signature: to_hex(&signature.to_bytes()),
    }
}

/// Whether `signed`'s signature is `public_key`'s (hex) over its body; the error names a
/// malformed key or signature.
pub(crate) fn check(signed: &SignedReceipt, public_key: &str) -> Result<bool, String> {
    let key = VerifyingKey::from_bytes(&fixed_bytes(public_key, "--public-key")?)
        .map_err(|error| format!("--public-key: {error}"))?;
    let signature = Signature::from_bytes(&fixed_bytes(&signed.signature, "signature")?);
    Ok(key
        .verify(&signed.receipt.signed_bytes(), &signature)
        .is_ok())
}

/// Lowercase hex.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Exactly `N` bytes from hex; the error names `what`.
fn fixed_bytes<const N: usize>(hex: &str, what: &str) -> Result<[u8; N], String> {
    let invalid = || format!("{what}: expected {} hex digits", N * 2);
    if hex.len() != N * 2 || !hex.is_ascii() {
        return Err(invalid());
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
    }
    Ok(bytes)
}
