//! Users, tokens and grants (admins only): one change per call, proposed by the leader.
//! A retry after a lost answer may make the change twice: a second `add_user` is refused as
//! existing, a second `create_token` makes a second token (the first, never shown, can be
//! revoked from the list).

use super::{CallKind, Client};
use crate::error::Error;
use crate::proto;
use crate::proto::auth_change_request::Change;
use crate::proto::auth_client::AuthClient;
use crate::read::NodePreference;

impl Client {
    /// One change of users, tokens or grants; for `CreateToken`, the answer holds the token.
    pub async fn change_auth(&self, change: Change) -> Result<proto::AuthChangeResponse, Error> {
        let request = proto::AuthChangeRequest {
            change: Some(change),
        };
        let start = self.inner.endpoints.leader_or_first();
        let (response, _) = self
            .with_retries(
                "security change",
                "",
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| {
                    let request = request.clone();
                    async move {
                        Ok(AuthClient::new(channel)
                            .change_auth(request)
                            .await?
                            .into_inner())
                    }
                },
            )
            .await?;
        Ok(response)
    }

    /// Users and tokens as the answering node has applied them.
    pub async fn list_auth(&self) -> Result<proto::ListAuthResponse, Error> {
        let start = self.inner.endpoints.leader_or_first();
        let (response, _) = self
            .with_retries(
                "security list",
                "",
                start,
                NodePreference::Leader,
                CallKind::Request,
                |channel| async move {
                    Ok(AuthClient::new(channel)
                        .list_auth(proto::ListAuthRequest {})
                        .await?
                        .into_inner())
                },
            )
            .await?;
        Ok(response)
    }
}
