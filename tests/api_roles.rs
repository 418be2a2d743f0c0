//! Role matrix: VIEWER / MANAGER / OWNER, as users and as API keys, against
//! reading configuration, writing configuration, managing API keys and
//! managing members. A refusal is 403 `forbidden` and writes nothing.

use crate::api_support;

use api_support::Api;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Debug)]
enum R {
    Viewer,
    Manager,
    Owner,
}

#[tokio::test]
async fn role_matrix() {
    let api = Api::start().await;
    let (_, owner) = api.user("owner@example.com").await;
    let ws = api.workspace(&owner, "Acme").await;
    let base = format!("/v1/workspaces/{ws}");
    let mut principals: Vec<(String, R, String)> = Vec::new();
    for (email, role, r) in [
        ("viewer@example.com", "VIEWER", R::Viewer),
        ("manager@example.com", "MANAGER", R::Manager),
    ] {
        let (_, token) = api.user(email).await;
        let added = api
            .post(
                &format!("{base}/members"),
                &owner,
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(added.status, 201);
        principals.push((format!("user {role}"), r, token));
    }
    principals.push(("user OWNER".into(), R::Owner, owner.clone()));
    for (role, r) in [
        ("VIEWER", R::Viewer),
        ("MANAGER", R::Manager),
        ("OWNER", R::Owner),
    ] {
        principals.push((format!("key {role}"), r, api.key(&owner, ws, role).await));
    }
    let agent = api
        .create(&owner, ws, "agents", json!({"name": "Existing"}))
        .await;
    let (target_id, _) = api.user("target@example.com").await;

    for (who, role, token) in &principals {
        let can_write = *role != R::Viewer;
        let is_owner = *role == R::Owner;

        // read configuration: everyone
        for path in [
            "agents",
            "personas",
            "phone-numbers",
            "sip-trunks",
            "call-logs",
            "knowledge",
        ] {
            let r = api.get(&format!("{base}/{path}"), token).await;
            assert_eq!(r.status, 200, "{who} reads {path}");
        }
        assert_eq!(
            api.get(&format!("{base}/agents/{agent}"), token)
                .await
                .status,
            200
        );
        assert_eq!(
            api.get(&format!("{base}/members"), token).await.status,
            200,
            "{who} lists members"
        );

        // write configuration: MANAGER and OWNER
        let before = api.count("select 1 from agents").await;
        let r = api
            .post(
                &format!("{base}/agents"),
                token,
                json!({"name": format!("by {who}")}),
            )
            .await;
        let expected = if can_write { 201 } else { 403 };
        assert_eq!(r.status, expected, "{who} creates an agent: {}", r.text);
        if !can_write {
            assert_eq!(r.code(), "forbidden");
            assert_eq!(
                api.count("select 1 from agents").await,
                before,
                "nothing written"
            );
        }
        let r = api
            .patch(
                &format!("{base}/agents/{agent}"),
                token,
                json!({"description": who}),
            )
            .await;
        assert_eq!(r.status, if can_write { 200 } else { 403 }, "{who} patches");
        let r = api
            .post(
                &format!("{base}/sip-trunks"),
                token,
                json!({"name": format!("trunk {who}")}),
            )
            .await;
        assert_eq!(
            r.status,
            if can_write { 201 } else { 403 },
            "{who} creates a trunk"
        );
        if can_write {
            let id = r.body["id"].as_str().unwrap();
            assert_eq!(
                api.delete(&format!("{base}/sip-trunks/{id}"), token)
                    .await
                    .status,
                204
            );
        }

        // manage API keys: OWNER only
        let keys_before = api.count("select 1 from api_keys").await;
        let r = api
            .post(
                &format!("{base}/api-keys"),
                token,
                json!({"name": "x", "role": "VIEWER"}),
            )
            .await;
        assert_eq!(
            r.status,
            if is_owner { 201 } else { 403 },
            "{who} creates a key"
        );
        if !is_owner {
            assert_eq!(api.count("select 1 from api_keys").await, keys_before);
        }
        assert_eq!(
            api.get(&format!("{base}/api-keys"), token).await.status,
            if is_owner { 200 } else { 403 }
        );

        // manage members: OWNER only (users and OWNER keys alike)
        let r = api
            .post(
                &format!("{base}/members"),
                token,
                json!({"email": "target@example.com", "role": "VIEWER"}),
            )
            .await;
        assert_eq!(
            r.status,
            if is_owner { 201 } else { 403 },
            "{who} adds a member: {}",
            r.text
        );
        let in_ws = api
            .count(&format!(
                "select 1 from user_roles where user_id = '{target_id}'"
            ))
            .await;
        assert_eq!(in_ws, if is_owner { 1 } else { 0 });
        if is_owner {
            let r = api
                .patch(
                    &format!("{base}/members/{target_id}"),
                    token,
                    json!({"role": "MANAGER"}),
                )
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                api.delete(&format!("{base}/members/{target_id}"), token)
                    .await
                    .status,
                204
            );
        }

        // workspace settings: MANAGER; deletion: OWNER (checked last, below)
        let r = api
            .patch(&base, token, json!({"settings": {"by": who}}))
            .await;
        assert_eq!(
            r.status,
            if can_write { 200 } else { 403 },
            "{who} edits the workspace"
        );
    }

    // deleting the workspace: refused to MANAGER and VIEWER, allowed to OWNER
    for (who, role, token) in &principals {
        if *role != R::Owner {
            assert_eq!(
                api.delete(&base, token).await.status,
                403,
                "{who} deletes the workspace"
            );
        }
    }
    assert_eq!(api.count("select 1 from workspaces").await, 1);
    assert_eq!(api.delete(&base, &owner).await.status, 204);
    assert_eq!(api.count("select 1 from workspaces").await, 0);
}
