//! Provider presets and answering-machine settings through the API: a new
//! Twilio or Telnyx trunk without `inbound_cidrs` admits its provider's
//! documented signalling ranges and takes PCMU/PCMA, what the admin gives
//! is kept, a generic trunk gets nothing; an agent's `amd_enabled`,
//! `amd_action` and `voicemail_message` are validated, stored and in the
//! OpenAPI document.

use crate::api_support;

use api_support::Api;
use serde_json::{json, Value};
use switchboard::sip::trunk_profile::{TELNYX_SIGNALLING, TWILIO_SIGNALLING};

#[tokio::test]
async fn provider_presets_fill_what_the_admin_left_out() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let trunks = format!("/v1/workspaces/{ws}/sip-trunks");

    let twilio = api
        .post(&trunks, &t, json!({"name": "Twilio", "provider": "twilio"}))
        .await;
    assert_eq!(twilio.status, 201, "{}", twilio.text);
    assert_eq!(twilio.body["inbound_cidrs"], json!(TWILIO_SIGNALLING));
    assert_eq!(twilio.body["codecs"], json!(["PCMU", "PCMA"]));

    let telnyx = api
        .post(
            &trunks,
            &t,
            json!({"name": "Telnyx", "provider": "telnyx", "inbound_cidrs": []}),
        )
        .await;
    assert_eq!(telnyx.status, 201, "{}", telnyx.text);
    assert_eq!(telnyx.body["inbound_cidrs"], json!(TELNYX_SIGNALLING));

    // The admin's own choices stay.
    let own = api
        .post(
            &trunks,
            &t,
            json!({"name": "Own", "provider": "twilio", "inbound_cidrs": ["192.0.2.0/24"], "codecs": ["PCMA"]}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.text);
    assert_eq!(own.body["inbound_cidrs"], json!(["192.0.2.0/24"]));
    assert_eq!(own.body["codecs"], json!(["PCMA"]));

    let generic = api.post(&trunks, &t, json!({"name": "PBX"})).await;
    assert_eq!(generic.status, 201, "{}", generic.text);
    assert_eq!(generic.body["provider"], "generic");
    assert_eq!(generic.body["inbound_cidrs"], json!([]));

    // What is stored is what was answered.
    let id = twilio.body["id"].as_str().expect("id");
    let read = api.get(&format!("{trunks}/{id}"), &t).await;
    assert_eq!(read.body["inbound_cidrs"], json!(TWILIO_SIGNALLING));
}

#[tokio::test]
async fn answering_machine_settings_are_validated_and_documented() {
    let api = Api::start().await;
    let (_, t) = api.user("owner@example.com").await;
    let ws = api.workspace(&t, "Acme").await;
    let agents = format!("/v1/workspaces/{ws}/agents");

    let plain = api.post(&agents, &t, json!({"name": "Plain"})).await;
    assert_eq!(plain.status, 201, "{}", plain.text);
    assert_eq!(
        (
            plain.body["amd_enabled"].clone(),
            plain.body["amd_action"].clone(),
            plain.body["voicemail_message"].clone()
        ),
        (json!(false), json!("hangup"), Value::Null)
    );
    let bad = api
        .post(
            &agents,
            &t,
            json!({"name": "V", "amd_enabled": true, "amd_action": "voicemail"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (422, "unprocessable"),
        "{}",
        bad.text
    );
    let bad = api
        .post(&agents, &t, json!({"name": "V", "amd_action": "record"}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let ok = api
        .post(
            &agents,
            &t,
            json!({"name": "V", "amd_enabled": true, "amd_action": "voicemail", "voicemail_message": "Please call us back."}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.body["voicemail_message"], "Please call us back.");
    // Emptying the message of a voicemail agent is refused too.
    let id = ok.body["id"].as_str().expect("id");
    let r = api
        .patch(
            &format!("{agents}/{id}"),
            &t,
            json!({"voicemail_message": null}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);

    let doc = api
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    let props = &doc.body["components"]["schemas"]["AgentsCreate"]["properties"];
    assert_eq!(props["amd_action"]["enum"], json!(["hangup", "voicemail"]));
    assert_eq!(props["amd_enabled"]["type"], "boolean");
    let amd_result = &doc.body["components"]["schemas"]["CallLogs"]["properties"]["amd_result"];
    assert!(
        amd_result.to_string().contains("\"machine\""),
        "call_logs' amd_result is documented: {amd_result}"
    );
}
