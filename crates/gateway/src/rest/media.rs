//! Media endpoints: upload slots, completion, status, download URLs. The
//! bytes never pass through the gateway: clients PUT and GET them at the
//! object storage with presigned URLs.

use axum::Json;
use axum::http::StatusCode;
use meridian_rpc::core as pb;
use meridian_wire::frames::{CreateUploadRequest, MediaDownloadView, MediaView, UploadSlotView};

use crate::ApiError;
use crate::convert::{attachment_view, media_view, presigned_view};
use crate::extract::{Authed, Body, Ids, Shared};

/// The OpenAPI tag of these endpoints: the module path the document named
/// them by when they lived in `crate::media`, kept so that the document
/// does not change.
const TAG: &str = "crate::media";

fn missing(what: &str) -> ApiError {
    ApiError::new(
        meridian_wire::ErrorCode::Internal,
        format!("the core's answer lacks {what}"),
    )
}

/// Issues an upload slot: a media id and a presigned PUT bound to the
/// declared size, type and SHA-256, valid for 15 minutes.
#[utoipa::path(post, path = "/v1/media", tag = TAG, request_body = CreateUploadRequest, security(("bearer" = [])),
    responses((status = 201, body = UploadSlotView), (status = 400, body = meridian_wire::frames::ErrorBody),
              (status = 422, description = "media_too_large: the declared size is over this deployment's limit (the schema's maximum); unsupported_media_type: the declared content type is not one of the schema's", body = meridian_wire::frames::ErrorBody),

              (status = 503, description = "media_unavailable: object storage unreachable", body = meridian_wire::frames::ErrorBody)))]
pub(crate) async fn create_upload(
    state: Shared,
    Authed(caller): Authed,
    Body(body): Body<CreateUploadRequest>,
) -> Result<(StatusCode, Json<UploadSlotView>), ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let slot = core
        .create_upload(pb::CreateUploadRequest {
            caller: Some(caller),
            size: body.size,
            content_type: body.content_type,
            sha256: body.sha256,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(UploadSlotView {
            media: media_view(slot.media.ok_or_else(|| missing("media"))?),
            upload: presigned_view(slot.upload.ok_or_else(|| missing("upload"))?),
        }),
    ))
}

/// After the PUT: checks the upload (size, SHA-256, content type; a
/// thumbnail for images) and answers its state, waiting up to 4 s for the
/// check (`checking` if it takes longer: call again).
#[utoipa::path(post, path = "/v1/media/{media_id}/complete", tag = TAG, security(("bearer" = [])),
    params(("media_id" = String, Path, description = "From the upload slot")),
    responses((status = 200, body = MediaView),
              (status = 404, body = meridian_wire::frames::ErrorBody),
              (status = 409, description = "media_not_uploaded", body = meridian_wire::frames::ErrorBody),
              (status = 503, description = "media_unavailable", body = meridian_wire::frames::ErrorBody)))]
pub(crate) async fn complete_upload(
    state: Shared,
    Authed(caller): Authed,
    Ids(media_id): Ids<String>,
) -> Result<Json<MediaView>, ApiError> {
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::MediaRequest {
        caller: Some(caller),
        media_id,
    };
    // Completing is idempotent: the check is queued once.
    let media = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.complete_upload(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(media_view(media)))
}

/// The caller's upload as it stands.
#[utoipa::path(get, path = "/v1/media/{media_id}", tag = TAG, security(("bearer" = [])),
    params(("media_id" = String, Path, description = "From the upload slot")),
    responses((status = 200, body = MediaView), (status = 404, body = meridian_wire::frames::ErrorBody)))]
pub(crate) async fn get_media(
    state: Shared,
    Authed(caller): Authed,
    Ids(media_id): Ids<String>,
) -> Result<Json<MediaView>, ApiError> {
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::MediaRequest {
        caller: Some(caller),
        media_id,
    };
    let media = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.get_media(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(media_view(media)))
}

/// Short-lived download URLs (content, and thumbnail for images) of an
/// attachment, for members of the conversation.
#[utoipa::path(get, path = "/v1/conversations/{conv_id}/messages/{msg_id}/media/{media_id}", tag = TAG, security(("bearer" = [])),
    params(("conv_id" = String, Path, description = "Conversation"),
           ("msg_id" = String, Path, description = "The message carrying the media"),
           ("media_id" = String, Path, description = "The attachment")),
    responses((status = 200, body = MediaDownloadView),
              (status = 404, description = "not_found: no such conversation (or not a member of it), message or attachment", body = meridian_wire::frames::ErrorBody),
              (status = 503, description = "media_unavailable", body = meridian_wire::frames::ErrorBody)))]
pub(crate) async fn media_download(
    state: Shared,
    Authed(caller): Authed,
    Ids((conv_id, msg_id, media_id)): Ids<(String, String, String)>,
) -> Result<Json<MediaDownloadView>, ApiError> {
    let core = state.cores.of(&caller.user_id)?.client.clone();
    let request = pb::MediaDownloadRequest {
        caller: Some(caller),
        conv_id,
        msg_id,
        media_id,
    };
    let download = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.media_download(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(MediaDownloadView {
        attachment: attachment_view(download.attachment.ok_or_else(|| missing("attachment"))?),
        download: presigned_view(download.download.ok_or_else(|| missing("download"))?),
        thumbnail: download.thumbnail.map(presigned_view),
    }))
}
