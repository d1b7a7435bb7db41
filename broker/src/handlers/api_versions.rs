//! ApiVersions (key 18), versions 0-4. A client asking with a version above ours gets the v0
//! fallback: UNSUPPORTED_VERSION and our list, so it can retry at one we support.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use super::{decode_body, Request, APIS};
use crate::server::Broker;

pub fn handle(_broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let error_code = if request.api_versions_fallback {
        ResponseError::UnsupportedVersion.code()
    } else {
        let _req: ApiVersionsRequest = decode_body(body, request.version)?;
        0
    };
    let api_keys = APIS
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    Ok(Some(ResponseKind::ApiVersions(
        ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(api_keys),
    )))
}
