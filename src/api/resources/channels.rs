//! `channel_configs` (per agent and channel) and `agent_web_widget_config`
//! (one per agent; its allowed domains are the browser-call origins).

use crate::api::resource::{dflt, eq, opt, req, Kind, Resource, READ_WRITE};
use crate::api::types::Role;

const CHANNELS: &[&str] = &["phone", "web", "sms", "whatsapp"];
const POSITIONS: &[&str] = &["bottom-right", "bottom-left", "top-right", "top-left"];

pub static CHANNEL_CONFIGS: Resource = Resource {
    path: "channel-configs",
    table: "channel_configs",
    summary: "Per-agent channel settings (phone, web, sms, whatsapp)",
    fields: &[
        req("agent_id", Kind::Ref("agents")),
        req("channel", Kind::Enum(CHANNELS)),
        dflt("config", Kind::Object),
        dflt("enabled", Kind::Bool),
    ],
    filters: &[
        eq("agent_id", Kind::Ref("agents")),
        eq("channel", Kind::Enum(CHANNELS)),
        eq("enabled", Kind::Bool),
    ],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &[],
    children: &[],
    order: "created_at",
};

pub static WEB_WIDGETS: Resource = Resource {
    path: "web-widgets",
    table: "agent_web_widget_config",
    summary: "Web widget of an agent (colours, position, allowed domains); its public key: GET/POST …/web-widgets/{id}/public-key",
    fields: &[
        req("agent_id", Kind::Ref("agents")),
        opt("primary_color", Kind::Color),
        dflt("position", Kind::Enum(POSITIONS)),
        opt("welcome_message", Kind::Text(2000)),
        dflt("allowed_domains", Kind::TextList(100, 253)),
    ],
    filters: &[eq("agent_id", Kind::Ref("agents"))],
    writes: READ_WRITE,
    write_role: Role::Manager,
    hidden: &["public_key"],
    children: &[],
    order: "created_at",
};
