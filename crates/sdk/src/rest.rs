//! The REST API.

use meridian_wire::frames::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{SdkError, TlsRoots};

/// A REST client for one gateway base URL (`http://host:port`, or
/// `https://` trusting the system's roots or those given).
#[derive(Debug, Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    tls: TlsRoots,
}

impl Rest {
    /// A client without credentials (enough to register), trusting the
    /// system's roots.
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_roots(base, TlsRoots::system())
    }

    /// A client trusting `tls`'s roots for `https` (and `wss`).
    pub fn with_roots(base: impl Into<String>, tls: TlsRoots) -> Self {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls.client_config()).clone())
            .build()
            // Only a TLS backend missing from the build fails here.
            .unwrap_or_default();
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token: None,
            tls,
        }
    }

    /// The roots this client trusts.
    pub fn tls(&self) -> &TlsRoots {
        &self.tls
    }

    /// The same client acting with a device token.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The same client (roots, token) for the gateway at `base`.
    pub fn at(&self, base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL of this gateway.
    pub fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http", "ws", 1))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, SdkError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            if status == reqwest::StatusCode::NO_CONTENT {
                return serde_json::from_value(serde_json::Value::Null)
                    .map_err(|e| SdkError::Protocol(e.to_string()));
            }
            return response.json().await.map_err(SdkError::Http);
        }
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(SdkError::Api {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
            }),
            Err(_) => Err(SdkError::Protocol(format!("{status}: {text}"))),
        }
    }

    /// `POST /v1/users`.
    ///
    /// # Errors
    /// Typed API errors and transport failures.
    pub async fn register(&self, display_name: &str) -> Result<RegisterResponse, SdkError> {
        self.register_in(display_name, None).await
    }

    /// `POST /v1/users`, homing the user in `home_region` (default: the
    /// gateway's region).
    ///
    /// # Errors
    /// Typed API errors and transport failures.
    pub async fn register_in(
        &self,
        display_name: &str,
        home_region: Option<&str>,
    ) -> Result<RegisterResponse, SdkError> {
        let body = RegisterRequest {
            display_name: display_name.into(),
            device_label: None,
            home_region: home_region.map(str::to_string),
        };
        self.call(reqwest::Method::POST, "/v1/users", Some(&body))
            .await
    }

    /// `POST /v1/devices`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn add_device(&self, label: &str) -> Result<DeviceCreated, SdkError> {
        self.call(
            reqwest::Method::POST,
            "/v1/devices",
            Some(&AddDeviceRequest {
                label: label.into(),
            }),
        )
        .await
    }

    /// `DELETE /v1/devices/{id}`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), SdkError> {
        self.call::<()>(
            reqwest::Method::DELETE,
            &format!("/v1/devices/{device_id}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/conversations/direct`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn direct(&self, peer_user_id: &str) -> Result<ConversationView, SdkError> {
        let body = DirectRequest {
            peer_user_id: peer_user_id.into(),
        };
        self.call(
            reqwest::Method::POST,
            "/v1/conversations/direct",
            Some(&body),
        )
        .await
    }

    /// `POST /v1/conversations`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn create_group(
        &self,
        name: &str,
        member_user_ids: &[String],
    ) -> Result<ConversationView, SdkError> {
        let body = CreateGroupRequest {
            name: name.into(),
            member_user_ids: member_user_ids.to_vec(),
        };
        self.call(reqwest::Method::POST, "/v1/conversations", Some(&body))
            .await
    }

    /// `POST /v1/conversations/{id}/members`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn add_members(
        &self,
        conv_id: &str,
        user_ids: &[String],
    ) -> Result<ConversationView, SdkError> {
        let body = AddMembersRequest {
            user_ids: user_ids.to_vec(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv_id}/members"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /v1/conversations/{id}/members/{user}`: removes a member (admins) or leaves (oneself).
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn remove_member(
        &self,
        conv_id: &str,
        user_id: &str,
    ) -> Result<ConversationView, SdkError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/conversations/{conv_id}/members/{user_id}"),
            None::<&()>,
        )
        .await
    }

    /// `PATCH /v1/conversations/{id}`: renames a group (admins only).
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn rename(&self, conv_id: &str, name: &str) -> Result<ConversationView, SdkError> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/v1/conversations/{conv_id}"),
            Some(&RenameRequest { name: name.into() }),
        )
        .await
    }

    /// `GET /v1/conversations/{id}`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn conversation(&self, conv_id: &str) -> Result<ConversationView, SdkError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conv_id}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/conversations/{id}/members`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn members(&self, conv_id: &str) -> Result<Vec<MemberView>, SdkError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conv_id}/members"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/conversations/{id}/messages`: newest first, older than
    /// message `before` when given.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn history(
        &self,
        conv_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<HistoryView, SdkError> {
        self.history_page(conv_id, None, before, limit).await
    }

    /// `GET /v1/conversations/{conv_id}/messages?after=…`: up to `limit`
    /// messages newer than `after`, oldest first, stopping before
    /// `before` when it is given (the messages between the two).
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn history_after(
        &self,
        conv_id: &str,
        after: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<HistoryView, SdkError> {
        self.history_page(conv_id, Some(after), before, limit).await
    }

    /// One page of a conversation's history, bounded as given.
    async fn history_page(
        &self,
        conv_id: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<HistoryView, SdkError> {
        let mut path = format!("/v1/conversations/{conv_id}/messages?limit={limit}");
        for (name, id) in [("after", after), ("before", before)] {
            if let Some(id) = id {
                path.push_str(&format!("&{name}={id}"));
            }
        }
        self.call(reqwest::Method::GET, &path, None::<&()>).await
    }

    /// `POST /v1/media`: an upload slot for `size` bytes of `content_type`
    /// whose SHA-256 is `sha256_hex`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn create_upload(
        &self,
        size: u64,
        content_type: &str,
        sha256_hex: &str,
    ) -> Result<UploadSlotView, SdkError> {
        let body = CreateUploadRequest {
            size,
            content_type: content_type.into(),
            sha256: sha256_hex.into(),
        };
        self.call(reqwest::Method::POST, "/v1/media", Some(&body))
            .await
    }

    /// Makes a presigned request (the upload's PUT or a download's GET) with
    /// its signed headers, and returns the response body.
    ///
    /// # Errors
    /// [`SdkError::Api`] with the storage's status (and `bad_request` as
    /// code) when it refuses.
    pub async fn presigned(
        &self,
        request: &PresignedView,
        body: Option<Vec<u8>>,
    ) -> Result<bytes::Bytes, SdkError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|e| SdkError::Protocol(e.to_string()))?;
        let mut http = self.http.request(method, &request.url);
        for (name, value) in &request.headers {
            http = http.header(name, value);
        }
        if let Some(body) = body {
            http = http.body(body);
        }
        let response = http.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(SdkError::Api {
                status: status.as_u16(),
                code: meridian_wire::ErrorCode::BadRequest,
                message: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
    }

    /// `POST /v1/media/{id}/complete`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn complete_upload(&self, media_id: &str) -> Result<MediaView, SdkError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/media/{media_id}/complete"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/media/{id}`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn media(&self, media_id: &str) -> Result<MediaView, SdkError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/media/{media_id}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/conversations/{conv}/messages/{msg}/media/{media}`.
    ///
    /// # Errors
    /// As [`Rest::register`].
    pub async fn media_download(
        &self,
        conv_id: &str,
        msg_id: &str,
        media_id: &str,
    ) -> Result<MediaDownloadView, SdkError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}"),
            None::<&()>,
        )
        .await
    }
}
