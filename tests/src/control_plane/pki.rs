//! The test cluster's certificates: one CA that signs the API server's serving
//! certificate and every client identity, and the service account signing key.
//!
//! Users are client certificates, as in envtest: the API server takes the user
//! name from the subject's CN and the groups from its O attributes. rcgen keeps
//! one value per subject attribute, so client certificates (which need one O
//! per group) are written here as DER with yasna and signed with the CA's key
//! through rcgen; the CA and the serving certificate come from rcgen directly.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SigningKey,
};
use yasna::models::ObjectIdentifier;

use super::HarnessError;

const CA_NAME: &str = "msp-test-ca";
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];
const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// A certificate with its private key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The cluster's certificate authority.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new() -> Result<Ca, HarnessError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, DnValue::Utf8String(CA_NAME.into()));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The API server's serving certificate, valid for the loopback address.
    pub fn serving(&self) -> Result<Pem, HarnessError> {
        self.serving_for("kube-apiserver", &["127.0.0.1", "localhost"])
    }

    /// A serving certificate with CN `name` for these DNS names and IP
    /// addresses (rcgen tells them apart).
    pub fn serving_for(&self, name: &str, sans: &[&str]) -> Result<Pem, HarnessError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// The CA's private key, for a controller-manager that signs certificates.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A client certificate for `user` in `groups` (CN=user, one O per group).
    pub fn client(&self, user: &str, groups: &[&str]) -> Result<Pem, HarnessError> {
        let key = KeyPair::generate()?;
        // A random v4 UUID's 122 random bits make a unique serial.
        let serial = uuid::Uuid::new_v4().into_bytes();
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next()
                    .write_tagged(yasna::Tag::context(0), |w| w.write_u8(2)); // v3
                w.next().write_bigint_bytes(&serial, true);
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(OID_ECDSA_SHA256))
                });
                // Byte for byte what rcgen wrote as the CA's subject, so that
                // the API server links the two.
                write_name(w.next(), &[(OID_COMMON_NAME, CA_NAME)]);
                w.next().write_sequence(|w| {
                    // UTCTime; a day before now would do, but a fixed wide
                    // window keeps clock skew out of test failures.
                    write_utc_time(w.next(), "000101000000Z");
                    write_utc_time(w.next(), "491231235959Z");
                });
                let subject: Vec<(&[u64], &str)> = std::iter::once((OID_COMMON_NAME, user))
                    .chain(groups.iter().map(|g| (OID_ORGANIZATION, *g)))
                    .collect();
                write_name(w.next(), &subject);
                w.next().write_der(&key.subject_public_key_info());
                w.next().write_tagged(yasna::Tag::context(3), |w| {
                    w.write_sequence(|w| {
                        // keyUsage: digitalSignature (critical)
                        w.next().write_sequence(|w| {
                            w.next()
                                .write_oid(&ObjectIdentifier::from_slice(OID_KEY_USAGE));
                            w.next().write_bool(true);
                            let value = yasna::construct_der(|w| w.write_bitvec_bytes(&[0x80], 1));
                            w.next().write_bytes(&value);
                        });
                        // extKeyUsage: clientAuth
                        w.next().write_sequence(|w| {
                            w.next()
                                .write_oid(&ObjectIdentifier::from_slice(OID_EXT_KEY_USAGE));
                            let value = yasna::construct_der(|w| {
                                w.write_sequence(|w| {
                                    w.next()
                                        .write_oid(&ObjectIdentifier::from_slice(OID_CLIENT_AUTH))
                                })
                            });
                            w.next().write_bytes(&value);
                        });
                    })
                });
            })
        });
        let signature = self.issuer.key().sign(&tbs)?;
        let der = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_sequence(|w| {
                    w.next()
                        .write_oid(&ObjectIdentifier::from_slice(OID_ECDSA_SHA256))
                });
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            })
        });
        Ok(Pem {
            cert: pem::encode(&pem::Pem::new("CERTIFICATE", der)),
            key: key.serialize_pem(),
        })
    }
}

/// The key pair the API server signs and verifies service account tokens with.
pub struct ServiceAccountKey {
    pub private_pem: String,
    pub public_pem: String,
}

impl ServiceAccountKey {
    pub fn new() -> Result<ServiceAccountKey, HarnessError> {
        let key = KeyPair::generate()?;
        Ok(ServiceAccountKey {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}

/// A Name as rcgen writes it: one single-valued RDN per attribute, UTF8String.
fn write_name(w: yasna::DERWriter, attributes: &[(&[u64], &str)]) {
    w.write_sequence(|w| {
        for (oid, value) in attributes {
            w.next().write_set(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                    w.next().write_utf8_string(value);
                })
            });
        }
    });
}

fn write_utc_time(w: yasna::DERWriter, time: &str) {
    w.write_tagged_implicit(yasna::tags::TAG_UTCTIME, |w| w.write_bytes(time.as_bytes()));
}
