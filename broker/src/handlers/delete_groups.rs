//! DeleteGroups (key 42), versions 0-2: deletes empty groups and their committed offsets
//! (NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND for an unknown group).

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, ResponseKind};

use super::{decode_body, now_ms, Request};
use crate::server::Broker;

pub async fn handle(broker: &Broker, request: &Request, body: &mut Bytes) -> anyhow::Result<Option<ResponseKind>> {
    let req: DeleteGroupsRequest = decode_body(body, request.version)?;
    let asks = req.groups_names.into_iter().map(|id| async move {
        let name = id.0.to_string();
        let code = crate::groups::on_coordinator(broker, &name.clone(), move |c| async move { c.delete_group(&name, now_ms()).await })
            .await
            .unwrap_or_else(|e| e.code());
        DeletableGroupResult::default().with_group_id(id).with_error_code(code)
    });
    let results = futures::future::join_all(asks).await;
    Ok(Some(ResponseKind::DeleteGroups(
        DeleteGroupsResponse::default().with_results(results),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, GroupId};
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn every_version_encodes() {
        super::super::assert_encodes(ApiKey::DeleteGroups, |_| {
            ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(vec![DeletableGroupResult::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_error_code(68)]))
        });
    }
}
