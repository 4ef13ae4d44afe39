//! `keygen`, `sign` and `verify`: the author's side of signed policies
//! (the operator's side is `--policy-trust-secret`). A signature is
//! detached: the module's bytes, and so its sha256, stay those of the build.
//! `verify` checks exactly what the operator checks
//! (`msp_policy_engine::signature`), with the same words.

use std::path::{Path, PathBuf};

use anyhow::Context;
use msp_policy_engine::signature::{self, TrustedKeys};
use sha2::{Digest, Sha256};

/// Where a module's signature goes by default: beside it, `.sig` added.
pub fn default_signature_path(module: &Path) -> PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Writes a new key pair (PEM); refuses to overwrite either file.
pub fn keygen(secret: &Path, public: &Path) -> anyhow::Result<()> {
    let (sk, pk) = signature::generate_key_pair();
    for (path, text) in [(secret, &sk), (public, &pk)] {
        write_new(path, text.as_bytes())?;
    }
    // The secret key is for its owner alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", secret.display()))?;
    }
    println!(
        "wrote {} (secret: keep it out of the cluster) and {} (public: put it in the trust Secret)",
        secret.display(),
        public.display()
    );
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Signs `bytes` (the module at `label`) with the secret key at `key`,
/// writing the detached signature to `output`.
pub fn sign(bytes: &[u8], label: &str, key: &Path, output: &Path) -> anyhow::Result<()> {
    let secret = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let sig = signature::sign(bytes, &secret).with_context(|| format!("signing {label}"))?;
    std::fs::write(output, &sig).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "signed {label} (sha256 {}) with {}: wrote {} ({} bytes)",
        hex_sha256(bytes),
        key.display(),
        output.display(),
        sig.len()
    );
    Ok(())
}

/// Checks the signature at `signature` of `bytes` against the public keys
/// at `keys` (each named by its file name): the signers and how long the
/// check took (what it costs the operator per load). Ok(Err(why)): refused.
pub fn verify(
    bytes: &[u8],
    signature: &Path,
    keys: &[PathBuf],
) -> anyhow::Result<Result<(Vec<String>, std::time::Duration), String>> {
    let mut entries = Vec::new();
    for path in keys {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let key = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        entries.push((name, key));
    }
    let trusted = TrustedKeys::parse(entries.iter().map(|(n, k)| (n.as_str(), k.as_slice())))
        .context("the public keys")?;
    let sig = match std::fs::read(signature) {
        Ok(sig) => Some(sig),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", signature.display())),
    };
    let started = std::time::Instant::now();
    let verified = trusted.verify(bytes, sig.as_deref());
    let took = started.elapsed();
    Ok(verified
        .map(|signers| (signers, took))
        .map_err(|e| format!("{} ({e})", e.kind())))
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
