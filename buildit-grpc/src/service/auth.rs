//! Who is calling: the tenant of the caller's bearer token (every RPC asks), and the token's label.

use buildit_core::store::hash_token;
use tonic::{Request, Status};

use super::BuildItService;

/// Numbers the calls in the log.
static NEXT_REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl BuildItService {
    /// The caller's tenant, from `authorization: Bearer TOKEN`; logs the call with a request id (never the token).
    pub(super) async fn tenant<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let tenant = self.authenticate(request).await;
        let id = NEXT_REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rpc = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map_or("?", |method| method.method());
        match &tenant {
            Ok(tenant) => tracing::info!(request_id = id, rpc, tenant = tenant.as_str(), "call"),
            Err(status) => tracing::warn!(
                request_id = id,
                rpc,
                code = ?status.code(),
                reason = status.message(),
                "call refused"
            ),
        }
        tenant
    }

    async fn authenticate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let token = bearer(request)
            .ok_or_else(|| Status::unauthenticated("an `authorization: Bearer TOKEN` is needed"))?;
        match self.store.tenant_of_token(&hash_token(token)).await {
            Ok(Some(tenant)) => Ok(tenant),
            Ok(None) => Err(Status::unauthenticated("unknown or revoked token")),
            Err(error) => Err(Status::unavailable(format!("the store: {error}"))),
        }
    }

    /// The label of the caller's token (already checked by [`BuildItService::tenant`]), for the record; `None`
    /// when it has none or cannot be read.
    pub(super) async fn token_label<T>(&self, request: &Request<T>) -> Option<String> {
        let token = bearer(request)?;
        let found = self.store.find_token(&hash_token(token)).await.ok()??;
        Some(found.name).filter(|name| !name.is_empty())
    }
}

/// The token of `authorization: Bearer TOKEN` (the scheme is case-insensitive: RFC 7235).
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
}
