//! Accounts: registration, users' profiles, and the caller's devices.

use axum::Json;
use axum::http::StatusCode;
use meridian_rpc::core as pb;
use meridian_wire::ErrorCode;
use meridian_wire::frames::{
    AddDeviceRequest, DeviceCreated, DeviceView, RegisterRequest, RegisterResponse, UserView,
};

use crate::ApiError;
use crate::extract::{Authed, Body, ClientIp, Ids, Shared};

/// Registers a user homed in this region with a first device.
#[utoipa::path(post, path = "/v1/users", request_body = RegisterRequest,
    responses((status = 201, body = RegisterResponse),
              (status = 404, description = "not_found: `home_region` is not a region of this deployment", body = meridian_wire::frames::ErrorBody)))]
pub(crate) async fn register(
    state: Shared,
    ClientIp(client): ClientIp,
    Body(body): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    if !state.limits.registrations.allow(&client.to_string()) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "too many registrations; retry later",
        ));
    }
    // The core names a device given no label "device"; a label given
    // empty is a mistake, as for any other name.
    if body.device_label.as_deref() == Some("") {
        return Err(ApiError::new(
            ErrorCode::InvalidName,
            "device_label must be 1-64 characters; leave it out for the default",
        ));
    }
    let mut core = match body.home_region.as_deref() {
        Some(region) => state.cores.for_registration(region)?,
        None => state.cores.local()?,
    }
    .client
    .clone();
    let response = core
        .register_user(pb::RegisterUserRequest {
            display_name: body.display_name,
            device_label: body.device_label.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let (Some(user), Some(device)) = (response.user, response.device) else {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "incomplete registration answer",
        ));
    };
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user_id: user.user_id,
            home_region: user.home_region,
            device_id: device.device_id,
            token: device.token,
        }),
    ))
}

/// A user's public profile.
#[utoipa::path(get, path = "/v1/users/{user_id}", params(("user_id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn get_user(
    state: Shared,
    Authed(caller): Authed,
    Ids(user_id): Ids<String>,
) -> Result<Json<UserView>, ApiError> {
    let core = state.cores.of(&user_id)?.client.clone();
    let request = pb::GetUserRequest {
        caller: Some(caller),
        user_id,
    };
    let user = crate::cores::idempotent(|| {
        let (mut core, request) = (core.clone(), request.clone());
        async move { core.get_user(request).await }
    })
    .await?
    .into_inner();
    Ok(Json(UserView {
        user_id: user.user_id,
        display_name: user.display_name,
        home_region: user.home_region,
    }))
}

/// Adds a device to the caller's account.
#[utoipa::path(post, path = "/v1/devices", request_body = AddDeviceRequest,
    responses((status = 201, body = DeviceCreated),
              (status = 409, description = "too_many_devices: the account has 16 active devices; revoke one first", body = meridian_wire::frames::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn add_device(
    state: Shared,
    Authed(caller): Authed,
    Body(body): Body<AddDeviceRequest>,
) -> Result<(StatusCode, Json<DeviceCreated>), ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let device = core
        .add_device(pb::AddDeviceRequest {
            caller: Some(caller),
            label: body.label,
        })
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(DeviceCreated {
            device_id: device.device_id,
            token: device.token,
        }),
    ))
}

/// The caller's devices.
#[utoipa::path(get, path = "/v1/devices", responses((status = 200, body = [DeviceView])), security(("bearer" = [])))]
pub(crate) async fn list_devices(
    state: Shared,
    Authed(caller): Authed,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    let list = core.list_devices(caller).await?.into_inner();
    Ok(Json(
        list.devices
            .into_iter()
            .map(|d| DeviceView {
                device_id: d.device_id,
                label: d.label,
                created_ms: d.created_ms,
                revoked: d.revoked,
            })
            .collect(),
    ))
}

/// Revokes one of the caller's devices: its token is refused from then on.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", params(("device_id" = String, Path)),
    responses((status = 204), (status = 404, body = meridian_wire::frames::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn revoke_device(
    state: Shared,
    Authed(caller): Authed,
    Ids(device_id): Ids<String>,
) -> Result<StatusCode, ApiError> {
    let mut core = state.cores.of(&caller.user_id)?.client.clone();
    core.revoke_device(pb::RevokeDeviceRequest {
        caller: Some(caller),
        device_id,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
