//! Signed policies: a detached Ed25519 signature over a module's exact
//! bytes, in the format of the WebAssembly signatures proposal (the
//! `wasmsign2` crate: `SignatureData`, the payload its `signature` custom
//! section would carry), verified against a set of trusted public keys.
//!
//! Detached, not embedded: the module's bytes, and so its sha256 that
//! status, Events and metrics show, stay those of the build; re-signing it
//! with another key (a key rotation) changes only the signature.
//!
//! The signature covers every byte after the module's 8-byte preamble (the
//! proposal hashes the sections, not the preamble); the engine accepts only
//! the component preamble, so no other reading of the same bytes can run.
//! On top of `wasmsign2`, a signature must be in canonical form: what it
//! decodes to must encode to exactly the bytes given, so a truncated,
//! duplicated or padded signature is refused rather than read in part.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmsign2::{Module, PublicKey, PublicKeySet, SecretKey, SignatureData, WSError};

/// Why a module's signature was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature was supplied with the module.
    #[error("the module is not signed: {0}")]
    Missing(String),
    /// The signature's bytes are not one signature in canonical form.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// The signature is for these bytes, but no trusted key made it.
    #[error("the signature was made by none of the {keys} trusted key(s) ({names})")]
    Untrusted { keys: usize, names: String },
    /// The signature is for other bytes than the module's.
    #[error(
        "the signature is over other bytes (it signs sections sha256 {signed}; this module's sections are sha256 {actual})"
    )]
    Mismatch { signed: String, actual: String },
}

impl SignatureError {
    pub fn kind(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "signature-missing",
            SignatureError::Malformed(_) => "signature-malformed",
            SignatureError::Untrusted { .. } => "signature-untrusted",
            SignatureError::Mismatch { .. } => "signature-mismatch",
        }
    }
}

/// Why a set of trusted keys could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("no keys")]
    Empty,
    #[error(
        "key {name:?} is not an Ed25519 public key in a format understood (PEM SubjectPublicKeyInfo, DER, or wasmsign2's raw form): {why}"
    )]
    Format { name: String, why: String },
}

/// The public keys a module's signature is checked against, each by name.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKeys")
            .field("names", &self.names())
            .finish()
    }
}

/// The proposal's sections hash of `module`: sha256 of everything after
/// the 8-byte preamble.
fn sections_sha256(module: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(module.get(8..).unwrap_or_default()));
    out
}

impl TrustedKeys {
    /// Keys from `(name, bytes)` entries. Every entry must be a key: one
    /// that is not (empty, a word such as "false", another algorithm) makes
    /// the whole set refused, so that a mistake is seen, never skipped.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<TrustedKeys, KeyError> {
        let mut keys = BTreeMap::new();
        for (name, bytes) in entries {
            let key = PublicKey::from_any(bytes).map_err(|e| KeyError::Format {
                name: name.to_string(),
                why: if bytes.is_empty() {
                    "the entry is empty".into()
                } else {
                    e.to_string()
                },
            })?;
            keys.insert(name.to_string(), key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(TrustedKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys' names, comma-separated.
    pub fn names(&self) -> String {
        self.keys.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Checks that `signature` is a signature over `module` by one of the
    /// keys; returns the names of the keys that signed it.
    pub fn verify(
        &self,
        module: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Vec<String>, SignatureError> {
        let Some(signature) = signature else {
            return Err(SignatureError::Missing(
                "no detached signature beside it (msp-policy sign makes one)".into(),
            ));
        };
        let data = canonical(signature)?;
        let set = PublicKeySet::new(self.keys.values().cloned().collect());
        match set.verify(&mut std::io::Cursor::new(module), Some(signature)) {
            Ok(signers) => Ok(self
                .keys
                .iter()
                .filter(|(_, k)| signers.contains(k))
                .map(|(n, _)| n.clone())
                .collect()),
            Err(WSError::VerificationFailed) => {
                // Which of the two: the signed hashes name other bytes, or
                // these bytes signed by a key not trusted.
                let actual = sections_sha256(module);
                let signed: Vec<&Vec<u8>> = data
                    .signed_hashes_set
                    .iter()
                    .flat_map(|s| &s.hashes)
                    .collect();
                if signed.iter().any(|h| h.as_slice() == actual.as_slice()) {
                    Err(SignatureError::Untrusted {
                        keys: self.len(),
                        names: self.names(),
                    })
                } else {
                    Err(SignatureError::Mismatch {
                        signed: signed
                            .iter()
                            .map(hex::encode)
                            .collect::<Vec<_>>()
                            .join(", "),
                        actual: hex::encode(actual),
                    })
                }
            }
            Err(e) => Err(SignatureError::Malformed(format!(
                "the module or signature cannot be read: {e}"
            ))),
        }
    }
}

/// `signature` decoded, refused unless it encodes back to exactly itself.
fn canonical(signature: &[u8]) -> Result<SignatureData, SignatureError> {
    if signature.is_empty() {
        return Err(SignatureError::Malformed("the signature is empty".into()));
    }
    let data = SignatureData::deserialize(signature).map_err(|e| {
        SignatureError::Malformed(format!(
            "{} bytes that do not decode as a signature ({e}): truncated, or not a signature",
            signature.len()
        ))
    })?;
    let encoded = data.serialize().map_err(|e| {
        SignatureError::Malformed(format!("the signature cannot be re-encoded: {e}"))
    })?;
    if encoded != signature {
        return Err(SignatureError::Malformed(format!(
            "{} bytes, of which a signature is {}: extra bytes (two signatures concatenated?) or an entry that does not decode",
            signature.len(),
            encoded.len()
        )));
    }
    if data
        .signed_hashes_set
        .iter()
        .all(|s| s.signatures.is_empty())
    {
        return Err(SignatureError::Malformed(
            "the signature data holds no signature".into(),
        ));
    }
    Ok(data)
}

/// Why signing failed.
#[derive(Debug, Error)]
pub enum SignError {
    #[error("not an Ed25519 secret key (PEM PKCS#8, DER, or wasmsign2's raw form): {0}")]
    Key(String),
    #[error("not a wasm module or component: {0}")]
    Module(String),
    #[error(
        "the module carries an embedded signature section: sign the module as built (a detached signature covers its exact bytes)"
    )]
    Embedded,
}

/// A new key pair, as PEM: (secret key, public key).
pub fn generate_key_pair() -> (String, String) {
    let pair = wasmsign2::KeyPair::generate();
    (pair.sk.to_pem(), pair.pk.to_pem())
}

/// The detached signature of `module`'s exact bytes by `secret_key` (PEM,
/// DER or raw).
pub fn sign(module: &[u8], secret_key: &[u8]) -> Result<Vec<u8>, SignError> {
    let key = SecretKey::from_any(secret_key).map_err(|e| SignError::Key(e.to_string()))?;
    let parsed = Module::deserialize(&mut std::io::Cursor::new(module))
        .map_err(|e| SignError::Module(e.to_string()))?;
    let signed = key
        .sign(parsed, None)
        .map_err(|e| SignError::Module(e.to_string()))?;
    let (unsigned, signature) = signed
        .detach_signature()
        .map_err(|e| SignError::Module(e.to_string()))?;
    // `sign` drops a signature section already there: the signature would
    // then be over other bytes than the module's.
    let mut bytes = Vec::with_capacity(module.len());
    unsigned
        .serialize(&mut bytes)
        .map_err(|e| SignError::Module(e.to_string()))?;
    if bytes != module {
        return Err(SignError::Embedded);
    }
    Ok(signature)
}

/// The public key of a secret key, as PEM (to check a pair belongs together).
pub fn public_key_of(secret_key: &[u8]) -> Result<String, SignError> {
    let key = SecretKey::from_any(secret_key).map_err(|e| SignError::Key(e.to_string()))?;
    Ok(PublicKey {
        pk: key.sk.public_key(),
        key_id: None,
    }
    .to_pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundled;

    fn pair() -> (String, String) {
        generate_key_pair()
    }

    fn keys(entries: &[(&str, &str)]) -> TrustedKeys {
        TrustedKeys::parse(entries.iter().map(|(n, k)| (*n, k.as_bytes()))).expect("keys")
    }

    #[test]
    fn a_component_signed_verifies_and_each_fault_is_told_apart() {
        let module = bundled::DEFAULT_COMPONENT;
        let (sk, pk) = pair();
        let (other_sk, other_pk) = pair();
        let signature = sign(module, sk.as_bytes()).expect("sign a component");
        let trusted = keys(&[("release", &pk), ("spare", &other_pk)]);
        assert_eq!(
            trusted.verify(module, Some(&signature)),
            Ok(vec!["release".to_string()])
        );

        let only_other = keys(&[("spare", &other_pk)]);
        let err = only_other.verify(module, Some(&signature)).unwrap_err();
        assert_eq!(err.kind(), "signature-untrusted", "{err}");

        let other_bytes = sign(b"\0asm\x0d\0\x01\0", sk.as_bytes()).expect("sign");
        let err = trusted.verify(module, Some(&other_bytes)).unwrap_err();
        assert_eq!(err.kind(), "signature-mismatch", "{err}");

        let mut tampered = module.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = trusted.verify(&tampered, Some(&signature)).unwrap_err();
        assert_eq!(err.kind(), "signature-mismatch", "{err}");

        assert_eq!(
            trusted.verify(module, None).unwrap_err().kind(),
            "signature-missing"
        );
        for bad in [
            Vec::new(),
            signature[..signature.len() - 1].to_vec(),
            signature[..10].to_vec(),
            [signature.clone(), signature.clone()].concat(),
            [signature.clone(), vec![0]].concat(),
            b"not a signature".to_vec(),
        ] {
            let err = trusted.verify(module, Some(&bad)).unwrap_err();
            assert_eq!(
                err.kind(),
                "signature-malformed",
                "{} bytes: {err}",
                bad.len()
            );
        }
        let _ = other_sk;
    }

    #[test]
    fn every_entry_must_be_a_key() {
        let (_, pk) = pair();
        assert_eq!(
            TrustedKeys::parse(std::iter::empty()).unwrap_err(),
            KeyError::Empty
        );
        for bad in ["", "false", "off", "disabled", "ssh-rsa AAAA", &pk[..40]] {
            let err =
                TrustedKeys::parse([("a", pk.as_bytes()), ("b", bad.as_bytes())]).expect_err(bad);
            assert!(
                matches!(&err, KeyError::Format { name, .. } if name == "b"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_module_with_an_embedded_signature_is_not_signed_over() {
        let (sk, _) = pair();
        let key = SecretKey::from_any(sk.as_bytes()).expect("key");
        let module = Module::deserialize(&mut std::io::Cursor::new(bundled::DEFAULT_COMPONENT))
            .expect("parse");
        let mut embedded = Vec::new();
        key.sign(module, None)
            .expect("sign")
            .serialize(&mut embedded)
            .expect("serialize");
        assert!(matches!(
            sign(&embedded, sk.as_bytes()),
            Err(SignError::Embedded)
        ));
        assert_eq!(
            public_key_of(sk.as_bytes()).expect("pk").len(),
            pair().1.len()
        );
    }
}
