//! Everything a call needs to know about its agent, loaded once when the
//! call starts: persona, voice settings, limits, model and its prices.

use sqlx::PgPool;

use super::amd::{AmdPolicy, OnMachine};
use crate::domain::{EscalationPolicy, TransferMode};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct AgentProfile {
    pub workspace_id: Uuid,
    pub agent_id: Uuid,
    pub agent_name: String,
    pub instructions: String,
    pub persona_name: String,
    pub tone: String,
    pub persona_instructions: String,
    pub greeting: String,
    pub fallback_message: String,
    pub escalation_policy: EscalationPolicy,
    pub transfer_to: Option<String>,
    /// The agent transfers (`transfer_to`), but this call's leg cannot (a
    /// browser call): the agent says so when asked for a person.
    pub transfer_unavailable: bool,
    pub transfer_mode: TransferMode,
    /// Said when a transfer fails; the conversation then goes on.
    pub transfer_failed_message: String,
    pub interruptible: bool,
    pub silence_timeout_ms: u64,
    pub max_call_seconds: u64,
    pub recording_enabled: bool,
    pub stt_provider: String,
    pub stt_language: Option<String>,
    pub tts_provider: String,
    pub tts_voice: String,
    pub tts_speed: f32,
    pub llm_provider: String,
    pub llm_model: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub context_window_size: u32,
    pub input_cost_per_1k: f64,
    pub output_cost_per_1k: f64,
    /// Answering-machine detection on this agent's outbound calls.
    pub amd: AmdPolicy,
}

impl AgentProfile {
    pub async fn load(pool: &PgPool, agent_id: Uuid) -> Result<AgentProfile, sqlx::Error> {
        let row: AgentRow = sqlx::query_as(
            "select a.workspace_id, a.id as agent_id, a.name as agent_name,
                    coalesce(a.instructions, '') as instructions,
                    coalesce(p.name, '') as persona_name,
                    coalesce(p.tone::text, 'professional') as tone,
                    coalesce(p.instructions, '') as persona_instructions,
                    coalesce(nullif(p.greeting, ''), 'Hello, thanks for calling. How can I help you today?') as greeting,
                    coalesce(nullif(p.fallback_message, ''), 'I am sorry, I do not have that information.') as fallback_message,
                    coalesce(p.escalation_policy::text, 'apologize') as escalation_policy,
                    nullif(a.transfer_to, '') as transfer_to,
                    a.transfer_mode,
                    coalesce(nullif(a.transfer_failed_message, ''), 'I am sorry, I could not transfer you right now. Can I help you with something else?') as transfer_failed_message,
                    coalesce(a.interruptible, true) as interruptible,
                    coalesce(a.silence_timeout_ms, 8000)::int8 as silence_timeout_ms,
                    coalesce(a.max_call_seconds, 600)::int8 as max_call_seconds,
                    coalesce(a.recording_enabled, false) as recording_enabled,
                    coalesce(a.stt_provider, 'whisper') as stt_provider,
                    a.stt_language,
                    coalesce(a.tts_provider, 'piper') as tts_provider,
                    coalesce(nullif(a.tts_voice, ''), 'en-us') as tts_voice,
                    coalesce(a.tts_speed, 1.0)::float8 as tts_speed,
                    coalesce(m.provider, 'offline') as llm_provider,
                    coalesce(m.model_id, 'retrieval-answerer') as llm_model,
                    coalesce(a.temperature, 0.3)::float8 as temperature,
                    coalesce(a.max_tokens, 300)::int8 as max_tokens,
                    coalesce(a.context_window_size, 4096)::int8 as context_window_size,
                    coalesce(m.input_cost_per_1k, 0)::float8 as input_cost_per_1k,
                    coalesce(m.output_cost_per_1k, 0)::float8 as output_cost_per_1k,
                    a.amd_enabled, a.amd_action, a.voicemail_message
             from agents a
             left join personas p on p.id = a.persona_id
             left join llm_models m on m.id = a.llm_model_id
             where a.id = $1",
        )
        .bind(agent_id)
        .fetch_one(pool)
        .await?;
        Ok(row.into())
    }

    /// The persona's line when the caller is silent.
    pub fn reprompt(&self) -> String {
        "Are you still there? How can I help you?".to_string()
    }

    pub fn goodbye(&self) -> String {
        "It seems we got disconnected. Thank you for calling, goodbye.".to_string()
    }

    /// For a call on a leg that cannot transfer (a browser call): no
    /// transfer is offered to the model or attempted, and a request for a
    /// person is told that this call cannot be transferred.
    pub fn without_transfer(&mut self) {
        if self.transfer_to.take().is_some() {
            self.transfer_unavailable = true;
        }
    }

    /// An outbound call's variables filled into the greeting, the
    /// instructions and the voicemail message: each `{{name}}` becomes its
    /// value; names not given
    /// stay as written.
    pub fn fill_variables(&mut self, variables: &[(String, String)]) {
        if variables.is_empty() {
            return;
        }
        for text in [
            &mut self.greeting,
            &mut self.instructions,
            &mut self.persona_instructions,
        ] {
            *text = fill(text, variables);
        }
        if let OnMachine::Voicemail(message) = &mut self.amd.on_machine {
            *message = fill(message, variables);
        }
    }
}

/// `{{ name }}` (spaces optional) replaced by its value, in one pass so a
/// value that itself looks like a placeholder is left alone.
pub fn fill(text: &str, variables: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        match variables.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod fill_tests {
    use super::fill;

    #[test]
    fn placeholders_are_filled_once_and_unknown_ones_kept() {
        let vars = vec![
            ("name".to_string(), "Ada".to_string()),
            ("slot".to_string(), "{{name}}".to_string()),
        ];
        assert_eq!(fill("Hi {{name}}, {{ slot }}!", &vars), "Hi Ada, {{name}}!");
        assert_eq!(fill("{{missing}} {{name", &vars), "{{missing}} {{name");
        assert_eq!(fill("no braces", &vars), "no braces");
    }
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    workspace_id: Uuid,
    agent_id: Uuid,
    agent_name: String,
    instructions: String,
    persona_name: String,
    tone: String,
    persona_instructions: String,
    greeting: String,
    fallback_message: String,
    escalation_policy: String,
    transfer_to: Option<String>,
    transfer_mode: String,
    transfer_failed_message: String,
    interruptible: bool,
    silence_timeout_ms: i64,
    max_call_seconds: i64,
    recording_enabled: bool,
    stt_provider: String,
    stt_language: Option<String>,
    tts_provider: String,
    tts_voice: String,
    tts_speed: f64,
    llm_provider: String,
    llm_model: String,
    temperature: f64,
    max_tokens: i64,
    context_window_size: i64,
    input_cost_per_1k: f64,
    output_cost_per_1k: f64,
    amd_enabled: bool,
    amd_action: String,
    voicemail_message: Option<String>,
}

#[cfg(test)]
impl AgentProfile {
    /// A front desk on the offline providers, transferring to `transfer_to`.
    pub(crate) fn for_tests(transfer_to: Option<&str>) -> AgentProfile {
        AgentProfile {
            workspace_id: Uuid::nil(),
            agent_id: Uuid::nil(),
            agent_name: "Front desk".into(),
            instructions: String::new(),
            persona_name: "Ada".into(),
            tone: "friendly".into(),
            persona_instructions: String::new(),
            greeting: "Hello, how can I help?".into(),
            fallback_message: "Sorry.".into(),
            escalation_policy: EscalationPolicy::Apologize,
            transfer_to: transfer_to.map(str::to_string),
            transfer_unavailable: false,
            transfer_mode: TransferMode::Blind,
            transfer_failed_message: "Sorry, I could not transfer you.".into(),
            interruptible: true,
            silence_timeout_ms: 8000,
            max_call_seconds: 600,
            recording_enabled: false,
            stt_provider: "whisper".into(),
            stt_language: None,
            tts_provider: "piper".into(),
            tts_voice: "en-us".into(),
            tts_speed: 1.0,
            llm_provider: "offline".into(),
            llm_model: "offline".into(),
            temperature: 0.2,
            max_tokens: 200,
            context_window_size: 4000,
            input_cost_per_1k: 0.0,
            output_cost_per_1k: 0.0,
            amd: Default::default(),
        }
    }
}

impl From<AgentRow> for AgentProfile {
    fn from(r: AgentRow) -> Self {
        AgentProfile {
            workspace_id: r.workspace_id,
            agent_id: r.agent_id,
            agent_name: r.agent_name,
            instructions: r.instructions,
            persona_name: r.persona_name,
            tone: r.tone,
            persona_instructions: r.persona_instructions,
            greeting: r.greeting,
            fallback_message: r.fallback_message,
            // The SQL enum has no other values; an unknown one apologizes.
            escalation_policy: r
                .escalation_policy
                .parse()
                .unwrap_or(EscalationPolicy::Apologize),
            transfer_to: r.transfer_to,
            transfer_unavailable: false,
            transfer_mode: r.transfer_mode.parse().unwrap_or(TransferMode::Blind),
            transfer_failed_message: r.transfer_failed_message,
            interruptible: r.interruptible,
            silence_timeout_ms: r.silence_timeout_ms.clamp(1000, 3_600_000) as u64,
            max_call_seconds: r.max_call_seconds.clamp(10, 86_400) as u64,
            recording_enabled: r.recording_enabled,
            stt_provider: r.stt_provider,
            stt_language: r.stt_language,
            tts_provider: r.tts_provider,
            tts_voice: r.tts_voice,
            tts_speed: r.tts_speed.clamp(0.25, 4.0) as f32,
            llm_provider: r.llm_provider,
            llm_model: r.llm_model,
            temperature: r.temperature.clamp(0.0, 2.0) as f32,
            max_tokens: r.max_tokens.clamp(1, 32_000) as u32,
            context_window_size: r.context_window_size.clamp(256, 1_000_000) as u32,
            input_cost_per_1k: r.input_cost_per_1k,
            output_cost_per_1k: r.output_cost_per_1k,
            amd: AmdPolicy {
                enabled: r.amd_enabled,
                // The column's check allows only these two; a voicemail
                // without words (the API refuses one) hangs up.
                on_machine: match (r.amd_action.as_str(), r.voicemail_message) {
                    ("voicemail", Some(m)) if !m.trim().is_empty() => OnMachine::Voicemail(m),
                    _ => OnMachine::HangUp,
                },
            },
        }
    }
}
