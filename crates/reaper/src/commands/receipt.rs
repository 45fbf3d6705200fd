//! `reaper receipt JOB` prints a finished job's receipt signed with Ed25519; `reaper receipt
//! verify FILE` checks one: the signature against the public key and, with `--database`, the
//! job's audit chain and key digests in the configured database.
//!
//! The private key comes only from the environment: `REAPER_RECEIPT_KEY` (the 32-byte seed as
//! hex) or `REAPER_RECEIPT_KEY_FILE` (a file holding it). Never from the configuration file,
//! which is shared, printed by `reaper config check` and kept in repositories.

use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use reaper_core::receipt::SignedReceipt;
use reaper_engine::{ledger, receipt};

use super::{CommandError, CommandResult, connect};
use crate::settings::Settings;

/// The environment variable holding the signing key's seed (hex).
pub(crate) const KEY_ENV: &str = "REAPER_RECEIPT_KEY";
/// The environment variable naming a file that holds the seed (hex).
pub(crate) const KEY_FILE_ENV: &str = "REAPER_RECEIPT_KEY_FILE";

/// Prints job `id`'s signed receipt.
pub(crate) async fn make(settings: &Settings, id: &str) -> CommandResult {
    let key = signing_key()?;
    let db = connect(settings).await?;
    let Some(job) = ledger::get(&db, id).await? else {
        return Err(CommandError::no_job(id));
    };
    if !job.is_finished() {
        return Err(CommandError::Conflict(format!(
            "job {id} is {}; a receipt is made for a finished job",
            job.state
        )));
    }
    let body = receipt::build(&db, &settings.catalog, &job, Utc::now()).await?;
    let signature = key.sign(&body.signed_bytes());
    let signed = SignedReceipt {
        receipt: body,
        algorithm: "ed25519".into(),
        public_key: to_hex(key.verifying_key().as_bytes()),
        signature: to_hex(&signature.to_bytes()),
    };
    outln!("{}", serde_json::to_string_pretty(&signed)?);
    Ok(ExitCode::SUCCESS)
}

/// Checks the receipt in `file` with `public_key` (hex) and, with `database`, against the
/// configured database.
pub(crate) async fn verify(
    settings: &Settings,
    file: &std::path::Path,
    public_key: &str,
    database: bool,
) -> CommandResult {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let signed: SignedReceipt = serde_json::from_str(&text).map_err(|error| {
        CommandError::Invalid(format!("{}: not a receipt: {error}", file.display()))
    })?;
    let key = VerifyingKey::from_bytes(&fixed_bytes(public_key, "--public-key")?)
        .map_err(|error| CommandError::Invalid(format!("--public-key: {error}")))?;
    let signature = Signature::from_bytes(&fixed_bytes(&signed.signature, "signature")?);
    let mut problems = Vec::new();
    if key
        .verify(&signed.receipt.signed_bytes(), &signature)
        .is_err()
    {
        problems.push("the signature does not match the receipt and key (it was changed, or signed with another key)".to_owned());
    }
    if database {
        let db = connect(settings).await?;
        problems.extend(receipt::recheck(&db, &signed.receipt).await?);
    }
    let shown = serde_json::json!({"job": signed.receipt.job_id, "verified": problems.is_empty(), "problems": problems});
    outln!("{}", serde_json::to_string_pretty(&shown)?);
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CommandError::Conflict(format!(
            "the receipt of job {} does not hold: {}",
            signed.receipt.job_id,
            problems.join("; ")
        )))
    }
}

/// The signing key, from [`KEY_ENV`] or the file [`KEY_FILE_ENV`] names.
fn signing_key() -> Result<SigningKey, CommandError> {
    let seed = match (std::env::var(KEY_ENV), std::env::var(KEY_FILE_ENV)) {
        (Ok(seed), _) => seed,
        (Err(_), Ok(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("{KEY_FILE_ENV}: cannot read {path}"))?,
        (Err(_), Err(_)) => {
            return Err(CommandError::Invalid(format!(
                "no signing key: set {KEY_ENV} to the Ed25519 seed (64 hex digits) or {KEY_FILE_ENV} \
                 to a file holding it; the configuration file never holds it"
            )));
        }
    };
    Ok(SigningKey::from_bytes(&fixed_bytes(seed.trim(), KEY_ENV)?))
}

/// Lowercase hex.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Exactly `N` bytes from hex, or refused input naming `what`.
fn fixed_bytes<const N: usize>(hex: &str, what: &str) -> Result<[u8; N], CommandError> {
    let invalid = || CommandError::Invalid(format!("{what}: expected {} hex digits", N * 2));
    if hex.len() != N * 2 || !hex.is_ascii() {
        return Err(invalid());
    }
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
    }
    Ok(bytes)
}
