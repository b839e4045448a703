//! Trust on the bus: agency system identities, the development CA, mTLS
//! configuration and record signatures.

mod batch;
mod batch_proof;
mod identity;
pub mod pki;
mod record_check;
mod signing;
mod tls;
mod verifier;

pub use identity::{Identity, IdentityError, TRUST_DOMAIN};
pub use record_check::RecordChecker;
pub use signing::{
    SignError, Signer, Verified, VerifyError, check_issued_by, key_id, verify, verify_detached,
};
pub use tls::{
    SigningSettings, TlsError, TlsMaterial, TlsSettings, install_crypto_provider, peer_identity,
    pem_certificate_der,
};
pub use verifier::Verifier;
