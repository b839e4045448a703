//! Who is calling: mTLS on every server, the caller's identity taken from
//! the verified client certificate (never from the request), and a rate
//! limit per identity.

use std::{num::NonZeroU32, sync::Arc};

use govbus_security::{
    Identity, Signer, SigningSettings, TlsError, TlsMaterial, TlsSettings, peer_identity,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, service::Interceptor, transport::Server};
use tracing::warn;

/// Development only: serve without TLS and treat every caller as one fixed
/// identity. Never derived from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaintextSettings {
    pub assume_caller: Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Sustained requests per second per calling identity.
    pub per_second: u32,
    /// Requests a caller may send at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_second: 500,
            burst: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("rate_limit.per_second and rate_limit.burst must be at least 1")]
    RateLimit,
}

/// The authenticated caller, put in the request extensions by [`Authenticator`].
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// The caller of a request that passed the [`Authenticator`].
pub fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// A server's TLS material, transport mode and rate limiter.
#[derive(Clone)]
pub struct Security {
    tls: TlsMaterial,
    plaintext_caller: Option<Identity>,
    limiter: Arc<DefaultKeyedRateLimiter<Identity>>,
    rate: RateLimitSettings,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("identity", self.tls.identity())
            .field("plaintext_caller", &self.plaintext_caller)
            .finish_non_exhaustive()
    }
}

impl Security {
    pub fn load(
        tls: &TlsSettings,
        plaintext: Option<&PlaintextSettings>,
        rate: RateLimitSettings,
    ) -> Result<Self, SecurityError> {
        let (Some(per_second), Some(burst)) = (
            NonZeroU32::new(rate.per_second),
            NonZeroU32::new(rate.burst),
        ) else {
            return Err(SecurityError::RateLimit);
        };
        let limiter = RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst));
        Ok(Self {
            tls: TlsMaterial::load(tls)?,
            plaintext_caller: plaintext.map(|p| p.assume_caller.clone()),
            limiter: Arc::new(limiter),
            rate,
        })
    }

    /// This server's own identity, from its certificate.
    pub fn identity(&self) -> &Identity {
        self.tls.identity()
    }

    pub fn tls(&self) -> &TlsMaterial {
        &self.tls
    }

    /// This service's record signer: the signing files configured, or those
    /// beside its transport files `tls` (see [`SigningSettings::beside`]).
    pub fn signer(
        &self,
        tls: &TlsSettings,
        signing: Option<&SigningSettings>,
    ) -> Result<Signer, SecurityError> {
        let beside;
        let signing = match signing {
            Some(signing) => signing,
            None => {
                beside = SigningSettings::beside(tls);
                &beside
            }
        };
        Ok(self.tls.signer(signing)?)
    }

    /// The server builder with mTLS, or — development switch — without TLS.
    pub fn server_builder(&self) -> Result<Server, tonic::transport::Error> {
        match &self.plaintext_caller {
            None => Server::builder().tls_config(self.tls.server_config()),
            Some(caller) => {
                warn!(
                    assume_caller = %caller,
                    "INSECURE PLAINTEXT MODE: no TLS, no client authentication; every caller is treated as {caller}. Development only."
                );
                Ok(Server::builder())
            }
        }
    }

    pub fn authenticator(&self) -> Authenticator {
        Authenticator {
            security: self.clone(),
        }
    }
}

/// Establishes the caller of every request and applies its rate limit.
#[derive(Clone, Debug)]
pub struct Authenticator {
    security: Security,
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let identity = match &self.security.plaintext_caller {
            Some(caller) => caller.clone(),
            None => peer_identity(&request).ok_or_else(|| {
                Status::unauthenticated(
                    "a client certificate from the bus CA naming a spiffe://govbus/agency/…/system/… identity is required",
                )
            })?,
        };
        if self.security.limiter.check_key(&identity).is_err() {
            return Err(Status::resource_exhausted(format!(
                "rate limit for {identity} exceeded ({} requests/s, bursts of {})",
                self.security.rate.per_second, self.security.rate.burst
            )));
        }
        request.extensions_mut().insert(Caller(identity));
        Ok(request)
    }
}
