//! The one gate of the public API: every call to a wrapped service is authenticated here and
//! its method's rule applied before the handler runs; the caller goes into the request's
//! extensions for the handler's per-name check (`auth::check`).
//!
//! Rules by method, default deny: a method not listed is for admins only, so an RPC added
//! later is closed until its author says who may call it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_raft_store::auth::{Action, EVERY_NAME};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use super::{Auth, Principal};
use crate::tls::MemberHosts;

/// What a method requires beyond an authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The handler checks an action on each name the request carries (`auth::check`).
    PerName,
    /// Any authenticated caller (cluster status).
    Authenticated,
    /// Admins (and nodes) only.
    Admin,
}

/// The rule of a gRPC method (`/package.Service/Method`).
pub fn rule(path: &str) -> Rule {
    match path {
        "/cairn.v1.Streams/Append"
        | "/cairn.v1.Streams/AppendMulti"
        | "/cairn.v1.Streams/ReadQuery"
        | "/cairn.v1.Streams/Read"
        | "/cairn.v1.Streams/Subscribe"
        | "/cairn.v1.Streams/GetStreamMetadata"
        | "/cairn.v1.Streams/SetStreamMetadata"
        | "/cairn.v1.Streams/DeleteStream"
        // Consumer groups: `groups` on the group's source (`api/groups.rs`).
        | "/cairn.v1.Groups/CreateGroup"
        | "/cairn.v1.Groups/UpdateGroup"
        | "/cairn.v1.Groups/DeleteGroup"
        | "/cairn.v1.Groups/GroupInfo"
        | "/cairn.v1.Groups/ReplayParked"
        | "/cairn.v1.Groups/Consume" => Rule::PerName,
        // The list shows only the groups whose source the caller may manage.
        "/cairn.v1.Cluster/Status" | "/cairn.v1.Groups/ListGroups" => Rule::Authenticated,
        // Membership, scavenge, users/tokens/grants, and anything not listed.
        _ => Rule::Admin,
    }
}

/// Authenticates the caller and applies the method's rule.
async fn admit(
    auth: &Auth,
    path: &str,
    header: Option<&[u8]>,
    node_certificate: bool,
) -> Result<Principal, Status> {
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let principal = match auth
        .authenticate(header, node_certificate, now_unix_ms)
        .await
    {
        Ok(principal) => principal,
        Err(status) => {
            if status.code() == tonic::Code::Unauthenticated && auth.should_log_failure() {
                tracing::warn!(target: "cairn::audit", method = %path, reason = %status.message(), "unauthenticated call refused");
            }
            return Err(status);
        }
    };
    match rule(path) {
        Rule::PerName | Rule::Authenticated => {}
        Rule::Admin => {
            auth.allow(&principal, Action::Admin, EVERY_NAME)?;
            if let Principal::User(user) = &principal {
                tracing::info!(target: "cairn::audit", user = %user, method = %path, "admin action");
            }
        }
    }
    Ok(principal)
}

/// A public service behind the gate.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Auth>,
    members: Arc<MemberHosts>,
}

impl<S> Authenticated<S> {
    /// `members`: a certificate naming one of their hosts is a node's (`tls::MemberHosts`).
    pub fn new(inner: S, auth: Arc<Auth>, members: Arc<MemberHosts>) -> Self {
        Authenticated {
            inner,
            auth,
            members,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Authenticated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone is ready only if polled; keep the polled one for this call (tower's rule).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        let members = self.members.clone();
        Box::pin(async move {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let node_certificate = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .is_some_and(|certs| members.names_a_member(&certs));
            let path = request.uri().path().to_owned();
            match admit(&auth, &path, header.as_deref(), node_certificate).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_not_listed_are_for_admins() {
        assert_eq!(rule("/cairn.v1.Streams/Append"), Rule::PerName);
        assert_eq!(rule("/cairn.v1.Cluster/Status"), Rule::Authenticated);
        assert_eq!(rule("/cairn.v1.Cluster/RemoveNode"), Rule::Admin);
        assert_eq!(rule("/cairn.v1.Groups/Consume"), Rule::PerName);
        assert_eq!(rule("/cairn.v1.Groups/ListGroups"), Rule::Authenticated);
        assert_eq!(rule("/cairn.v1.Auth/ChangeAuth"), Rule::Admin);
        assert_eq!(rule("/cairn.v1.Streams/SomethingNew"), Rule::Admin);
    }
}
