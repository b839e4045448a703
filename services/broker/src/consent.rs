//! The `govbus.v1.Consents` service: the portal grants and revokes citizens'
//! consents. No other identity may.

use govbus_core::{
    Catalog, SubjectId,
    time::{micros_to_timestamp, now_micros, timestamp_to_micros},
};
use govbus_proto::v1::{
    Consent, ConsentScope as WireScope, GrantConsentRequest, RevokeConsentRequest,
    consents_server::Consents as ConsentsApi,
};
use govbus_security::Identity;
use govbus_store::{ConsentRecord, ConsentScope, Consents};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{error, info};

use govbus_policy::PolicyStore;

#[derive(Debug)]
pub struct ConsentService {
    consents: Consents,
    catalog: Arc<Catalog>,
    policy: PolicyStore,
}

impl ConsentService {
    pub fn new(consents: Consents, catalog: Arc<Catalog>, policy: PolicyStore) -> Self {
        Self {
            consents,
            catalog,
            policy,
        }
    }

    fn authorise<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let caller = govbus_server::caller(request)?;
        match self.policy.current().consent_manager() {
            Some(manager) if *manager == caller => Ok(caller),
            Some(manager) => Err(Status::permission_denied(format!(
                "only {manager} manages consents; the caller is {caller}"
            ))),
            None => Err(Status::permission_denied(
                "the policy names no consent manager (consent.managed_by)",
            )),
        }
    }

    fn scope(&self, wire: Option<WireScope>) -> Result<ConsentScope, Status> {
        let wire = wire.ok_or_else(|| Status::invalid_argument("scope: is required"))?;
        let subject = SubjectId::parse(&wire.subject_id)
            .map_err(|e| Status::invalid_argument(format!("scope.subject_id: {e}")))?;
        let consumer: Identity = wire
            .consumer
            .parse()
            .map_err(|e| Status::invalid_argument(format!("scope.consumer: {e}")))?;
        if self.catalog.get(&wire.record_type).is_none() {
            return Err(Status::invalid_argument(format!(
                "scope.record_type: unknown record type {:?}",
                wire.record_type
            )));
        }
        let purpose = wire.purpose.trim();
        // The same rule as an evidence request's purpose, which must match it.
        if purpose.is_empty() || !govbus_core::is_label(purpose) {
            return Err(Status::invalid_argument(
                "scope.purpose: required, at most 128 printable characters",
            ));
        }
        Ok(ConsentScope {
            subject_id: subject.to_string(),
            consumer: consumer.to_string(),
            record_type: wire.record_type,
            purpose: purpose.to_string(),
        })
    }
}

fn to_wire(c: ConsentRecord) -> Consent {
    Consent {
        scope: Some(WireScope {
            subject_id: c.scope.subject_id,
            consumer: c.scope.consumer,
            record_type: c.scope.record_type,
            purpose: c.scope.purpose,
        }),
        granted_at: Some(micros_to_timestamp(c.granted_at_us)),
        expires_at: Some(micros_to_timestamp(c.expires_at_us)),
        revoked_at: c.revoked_at_us.map(micros_to_timestamp),
    }
}

fn unavailable(e: govbus_store::StoreError) -> Status {
    error!(error = %e, "consent store failed");
    Status::unavailable("consent store unavailable")
}

impl ConsentService {
    async fn grant(
        &self,
        request: Request<GrantConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        let caller = self.authorise(&request)?;
        let request = request.into_inner();
        let scope = self.scope(request.scope)?;
        let now = now_micros();
        let expires = request
            .expires_at
            .as_ref()
            .map(timestamp_to_micros)
            .ok_or_else(|| Status::invalid_argument("expires_at: is required"))?;
        if expires <= now {
            return Err(Status::invalid_argument(
                "expires_at: must be in the future",
            ));
        }
        let consent = self
            .consents
            .grant(&scope, now, expires)
            .await
            .map_err(unavailable)?;
        info!(%caller, consumer = scope.consumer, record_type = scope.record_type, purpose = scope.purpose, "consent granted");
        Ok(Response::new(to_wire(consent)))
    }

    async fn revoke(
        &self,
        request: Request<RevokeConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        let caller = self.authorise(&request)?;
        let scope = self.scope(request.into_inner().scope)?;
        match self
            .consents
            .revoke(&scope, now_micros())
            .await
            .map_err(unavailable)?
        {
            Some(consent) => {
                info!(%caller, consumer = scope.consumer, record_type = scope.record_type, purpose = scope.purpose, "consent revoked");
                Ok(Response::new(to_wire(consent)))
            }
            None => Err(Status::not_found("no live consent with that scope")),
        }
    }
}

#[tonic::async_trait]
impl ConsentsApi for ConsentService {
    async fn grant_consent(
        &self,
        request: Request<GrantConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        govbus_server::metrics::observed("govbus.v1.Consents", "GrantConsent", self.grant(request))
            .await
    }

    async fn revoke_consent(
        &self,
        request: Request<RevokeConsentRequest>,
    ) -> Result<Response<Consent>, Status> {
        govbus_server::metrics::observed(
            "govbus.v1.Consents",
            "RevokeConsent",
            self.revoke(request),
        )
        .await
    }
}
