//! The demo workspace seeded by `switchboard seed-demo`: a fictional dental
//! practice whose receptionist agent answers `+15555550100` from a FAQ
//! knowledge base. Idempotent: rows are found by slug, email, name or number
//! and updated in place, inside one transaction under an advisory lock.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::DbError;

/// Serialises concurrent `seed-demo` runs ("SBSEED").
const SEED_LOCK: i64 = 0x5342_5345_4544;

pub const DEMO_SLUG: &str = "demo";
pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_NUMBER: &str = "+15555550100";
pub const DEMO_AGENT: &str = "Reception";
pub const DEMO_TRUNK: &str = "local";
const DEMO_PERSONA: &str = "Bluebird receptionist";
const DEMO_SOURCE: &str = "Bluebird Dental FAQ";
const TRANSFER_TO: &str = "+15555550199";

/// The knowledge base: one chunk per pair, stored as "Q: …\nA: …". The
/// offline answerer speaks the text after "A: ", so answers are short,
/// spoken-style sentences (no abbreviations a TTS would spell out).
pub const DEMO_FAQ: &[(&str, &str)] = &[
    ("What are your opening hours?",
     "We are open Monday to Friday from 8 am to 6 pm, and on Saturday from 9 am to 1 pm. We are closed on Sunday."),
    ("Are you open on Monday? What are your hours on Monday?",
     "On Monday we open at 8 am and close at 6 pm."),
    ("Are you open on Tuesday? What are your hours on Tuesday?",
     "On Tuesday we open at 8 am and close at 6 pm."),
    ("Are you open on Wednesday? What are your hours on Wednesday?",
     "On Wednesday we open at 8 am and close at 7 pm, for patients who work during the day."),
    ("Are you open on Thursday? What are your hours on Thursday?",
     "On Thursday we open at 8 am and close at 6 pm."),
    ("Are you open on Friday? What are your hours on Friday?",
     "On Friday we open at 8 am and close at 4 pm."),
    ("Are you open on Saturday? What are your hours on Saturday?",
     "On Saturday we open at 9 am and close at 1 pm."),
    ("Are you open on Sunday? What are your hours on Sunday?",
     "We are closed on Sunday. For a dental emergency, please call our emergency line."),
    ("Where are you located? What is your address?",
     "We are at 214 Maple Avenue in Springfield, right next to the public library."),
    ("Is there parking? Where can I park?",
     "Yes, we have free parking behind the building, and there is street parking on Maple Avenue."),
    ("Can I get there by bus or public transport?",
     "Yes, bus lines 4 and 12 stop at the library, one minute from our door."),
    ("How much does a check-up and cleaning cost? What are your prices?",
     "A check-up with a cleaning costs 120 dollars, and a filling starts at 150 dollars."),
    ("How much does teeth whitening cost?",
     "Professional teeth whitening costs 350 dollars, and it takes about one hour."),
    ("Do you accept my insurance? Which dental insurance do you take?",
     "We accept most major dental insurance plans, including Delta Dental, Cigna and MetLife. Please bring your insurance card to your visit."),
    ("What is your cancellation policy? How do I cancel or reschedule?",
     "Please cancel or reschedule at least 24 hours ahead. Late cancellations may be charged a 40 dollar fee."),
    ("What should I do in a dental emergency? I have a toothache.",
     "For a dental emergency during opening hours, come in and we will see you the same day. After hours, call our emergency line at 555 555 0199."),
    ("What payment methods do you accept? Can I pay by card?",
     "We accept cash, all major credit and debit cards, and Apple Pay. We also offer monthly payment plans for larger treatments."),
    ("Are you accepting new patients? How do I register as a new patient?",
     "Yes, we are happy to welcome new patients. Please arrive 15 minutes early to your first visit to fill in a short form."),
    ("How do I book an appointment?",
     "You can book an appointment on this call, or online at bluebird dental dot example."),
    ("Do you treat children?",
     "Yes, we treat patients of all ages, and children under 12 get a free fluoride treatment with their check-up."),
    ("Is the office wheelchair accessible?",
     "Yes, the office is on the ground floor with step-free access and an accessible restroom."),
];

const GREETING: &str =
    "Thanks for calling Bluebird Dental, this is the virtual receptionist. How can I help you today?";
const FALLBACK: &str =
    "I'm sorry, I don't have that information. I can transfer you to a member of our team.";
const PERSONA_INSTRUCTIONS: &str = "Be warm and brief. Answer in one or two short sentences that \
sound natural when spoken. Never give medical advice; offer an appointment instead.";
const AGENT_INSTRUCTIONS: &str = "You are the receptionist of Bluebird Dental, a family dental \
practice. Answer questions about opening hours, location, prices, insurance and policies using \
the knowledge base. If the caller asks for a person or has an emergency you cannot handle, \
transfer the call.";

/// Creates or refreshes the demo and returns a human-readable report. The
/// demo user's password is generated and shown only when the user is
/// created; later runs leave it unchanged.
pub async fn seed_demo(pool: &PgPool) -> Result<String, DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(SEED_LOCK)
        .execute(&mut *tx)
        .await?;

    let (user_id, new_password) = demo_user(&mut tx).await?;

    let workspace_id: Uuid = sqlx::query_scalar(
        "insert into workspaces (name, slug, created_by, settings)
         values ('Bluebird Dental (demo)', $1, $2, '{\"demo\": true}')
         on conflict (slug) do update set name = excluded.name
         returning id",
    )
    .bind(DEMO_SLUG)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;

    sqlx::query(
        "insert into profiles (id, workspace_id, full_name) values ($1, $2, 'Demo Owner')
         on conflict (id) do update set workspace_id = coalesce(profiles.workspace_id, excluded.workspace_id)",
    )
    .bind(user_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into user_roles (user_id, workspace_id, role) values ($1, $2, 'OWNER')
         on conflict (user_id, workspace_id) do update set role = 'OWNER'",
    )
    .bind(user_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;

    let persona_id = upsert_persona(&mut tx, workspace_id).await?;
    let agent_id = upsert_agent(&mut tx, workspace_id, persona_id).await?;
    let chunks = upsert_knowledge(&mut tx, workspace_id, agent_id).await?;

    sqlx::query(
        "insert into channel_configs (workspace_id, agent_id, channel, config, enabled)
         values ($1, $2, 'phone', jsonb_build_object('number', $3::text), true)
         on conflict (agent_id, channel) do update set config = excluded.config, enabled = true",
    )
    .bind(workspace_id)
    .bind(agent_id)
    .bind(DEMO_NUMBER)
    .execute(&mut *tx)
    .await?;

    let trunk_id: Uuid = sqlx::query_scalar(
        "insert into sip_trunks (workspace_id, name, provider, direction, inbound_cidrs, codecs,
                                 max_concurrent_calls, enabled)
         values ($1, $2, 'generic', 'both', '{127.0.0.0/8}', '{PCMU,PCMA}', 100, true)
         on conflict (workspace_id, name) do update set
             provider = excluded.provider, direction = excluded.direction,
             inbound_cidrs = excluded.inbound_cidrs, inbound_username = null, inbound_password = null,
             codecs = excluded.codecs, max_concurrent_calls = excluded.max_concurrent_calls,
             enabled = true
         returning id",
    )
    .bind(workspace_id)
    .bind(DEMO_TRUNK)
    .fetch_one(&mut *tx)
    .await?;

    // The number is the demo's even if an earlier run left it elsewhere.
    sqlx::query(
        "insert into phone_numbers (workspace_id, e164, sip_trunk_id, agent_id, label, enabled)
         values ($1, $2, $3, $4, 'Demo reception', true)
         on conflict (e164) do update set
             workspace_id = excluded.workspace_id, sip_trunk_id = excluded.sip_trunk_id,
             agent_id = excluded.agent_id, label = excluded.label, enabled = true",
    )
    .bind(workspace_id)
    .bind(DEMO_NUMBER)
    .bind(trunk_id)
    .bind(agent_id)
    .execute(&mut *tx)
    .await?;

    tx.commit().await?;

    let login = match new_password {
        Some(pw) => format!(
            "login:      {DEMO_EMAIL}\npassword:   {pw}\n            (shown once, only now that the user was created: note it)"
        ),
        None => format!("login:      {DEMO_EMAIL} (user already exists; password unchanged)"),
    };
    Ok(format!(
        "demo seeded\n\
         workspace:  Bluebird Dental (demo), slug {DEMO_SLUG}, id {workspace_id}\n\
         agent:      {DEMO_AGENT} (live), id {agent_id}\n\
         knowledge:  {chunks} FAQ entries\n\
         number:     {DEMO_NUMBER} via trunk {DEMO_TRUNK} (inbound from 127.0.0.0/8, no credentials)\n\
         call it:    sip:{DEMO_NUMBER}@127.0.0.1:5060\n\
         {login}"
    ))
}

/// Finds the demo user by email, or creates it with a random password
/// (returned so it can be shown once).
async fn demo_user(tx: &mut Transaction<'_, Postgres>) -> Result<(Uuid, Option<String>), DbError> {
    let existing: Option<Uuid> =
        sqlx::query_scalar("select id from auth.users where lower(email) = lower($1) limit 1")
            .bind(DEMO_EMAIL)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(id) = existing {
        return Ok((id, None));
    }
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20);
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| {
            DbError::Sqlx(sqlx::Error::Protocol(format!(
                "argon2id hashing failed: {e}"
            )))
        })?
        .to_string();
    let id: Uuid = sqlx::query_scalar(
        "insert into auth.users (id, email, encrypted_password) values ($1, $2, $3) returning id",
    )
    .bind(Uuid::new_v4())
    .bind(DEMO_EMAIL)
    .bind(hash)
    .fetch_one(&mut **tx)
    .await?;
    Ok((id, Some(password)))
}

async fn upsert_persona(
    tx: &mut Transaction<'_, Postgres>,
    workspace_id: Uuid,
) -> Result<Uuid, DbError> {
    let existing: Option<Uuid> = sqlx::query_scalar(
        "select id from personas where workspace_id = $1 and name = $2 order by created_at limit 1",
    )
    .bind(workspace_id)
    .bind(DEMO_PERSONA)
    .fetch_optional(&mut **tx)
    .await?;
    let id = existing.unwrap_or_else(Uuid::new_v4);
    sqlx::query(
        "insert into personas (id, workspace_id, name, tone, greeting, fallback_message, escalation_policy, instructions)
         values ($1, $2, $3, 'friendly', $4, $5, 'transfer', $6)
         on conflict (id) do update set
             tone = excluded.tone, greeting = excluded.greeting, fallback_message = excluded.fallback_message,
             escalation_policy = excluded.escalation_policy, instructions = excluded.instructions",
    )
    .bind(id)
    .bind(workspace_id)
    .bind(DEMO_PERSONA)
    .bind(GREETING)
    .bind(FALLBACK)
    .bind(PERSONA_INSTRUCTIONS)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

async fn upsert_agent(
    tx: &mut Transaction<'_, Postgres>,
    workspace_id: Uuid,
    persona_id: Uuid,
) -> Result<Uuid, DbError> {
    let existing: Option<Uuid> = sqlx::query_scalar(
        "select id from agents where workspace_id = $1 and name = $2 order by created_at limit 1",
    )
    .bind(workspace_id)
    .bind(DEMO_AGENT)
    .fetch_optional(&mut **tx)
    .await?;
    let id = existing.unwrap_or_else(Uuid::new_v4);
    sqlx::query(
        "insert into agents (id, workspace_id, name, description, domain, status, persona_id, goals, channels,
                             llm_model_id, instructions, temperature, max_tokens, context_window_size,
                             stt_provider, stt_language, tts_provider, tts_voice, tts_speed, interruptible,
                             silence_timeout_ms, max_call_seconds, recording_enabled, transfer_to, config)
         values ($1, $2, $3, 'Answers the phone for Bluebird Dental: hours, location, prices and policies.',
                 'healthcare', 'live', $4,
                 '{answer questions,book appointments,transfer emergencies}', '{phone,web}',
                 (select id from llm_models where is_default limit 1), $5, 0.3, 200, 4096,
                 'whisper', 'en', 'piper', 'en_US-joe-medium', 1.0, true,
                 8000, 600, false, $6, '{\"seeded_by\": \"seed-demo\"}')
         on conflict (id) do update set
             description = excluded.description, domain = excluded.domain, status = excluded.status,
             persona_id = excluded.persona_id, goals = excluded.goals, channels = excluded.channels,
             llm_model_id = excluded.llm_model_id, instructions = excluded.instructions,
             temperature = excluded.temperature, max_tokens = excluded.max_tokens,
             context_window_size = excluded.context_window_size, stt_provider = excluded.stt_provider,
             stt_language = excluded.stt_language, tts_provider = excluded.tts_provider,
             tts_voice = excluded.tts_voice, tts_speed = excluded.tts_speed,
             interruptible = excluded.interruptible, silence_timeout_ms = excluded.silence_timeout_ms,
             max_call_seconds = excluded.max_call_seconds, recording_enabled = excluded.recording_enabled,
             transfer_to = excluded.transfer_to, config = excluded.config",
    )
    .bind(id)
    .bind(workspace_id)
    .bind(DEMO_AGENT)
    .bind(persona_id)
    .bind(AGENT_INSTRUCTIONS)
    .bind(TRANSFER_TO)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// The FAQ source and its chunks. Chunks are upserted by position so their
/// ids (and embeddings, while the text is unchanged) survive a re-run.
async fn upsert_knowledge(
    tx: &mut Transaction<'_, Postgres>,
    workspace_id: Uuid,
    agent_id: Uuid,
) -> Result<usize, DbError> {
    let chunks: Vec<String> = DEMO_FAQ
        .iter()
        .map(|(q, a)| format!("Q: {q}\nA: {a}"))
        .collect();
    let existing: Option<Uuid> = sqlx::query_scalar(
        "select id from knowledge_sources where workspace_id = $1 and agent_id = $2 and name = $3
         order by created_at limit 1",
    )
    .bind(workspace_id)
    .bind(agent_id)
    .bind(DEMO_SOURCE)
    .fetch_optional(&mut **tx)
    .await?;
    let source_id = existing.unwrap_or_else(Uuid::new_v4);
    sqlx::query(
        "insert into knowledge_sources (id, workspace_id, agent_id, name, type, content, status, error, chunk_count)
         values ($1, $2, $3, $4, 'FAQ', $5, 'ready', null, $6)
         on conflict (id) do update set
             content = excluded.content, status = 'ready', error = null, chunk_count = excluded.chunk_count",
    )
    .bind(source_id)
    .bind(workspace_id)
    .bind(agent_id)
    .bind(DEMO_SOURCE)
    .bind(chunks.join("\n\n"))
    .bind(chunks.len() as i32)
    .execute(&mut **tx)
    .await?;
    for (index, content) in chunks.iter().enumerate() {
        sqlx::query(
            "insert into knowledge_chunks (workspace_id, source_id, agent_id, content, chunk_index, token_count)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (source_id, chunk_index) do update set
                 content = excluded.content, token_count = excluded.token_count,
                 embedding = case when knowledge_chunks.content = excluded.content
                                  then knowledge_chunks.embedding end,
                 question_embedding = case when knowledge_chunks.content = excluded.content
                                  then knowledge_chunks.question_embedding end,
                 answer_embedding = case when knowledge_chunks.content = excluded.content
                                  then knowledge_chunks.answer_embedding end",
        )
        .bind(workspace_id)
        .bind(source_id)
        .bind(agent_id)
        .bind(content)
        .bind(index as i32)
        .bind(content.split_whitespace().count() as i32)
        .execute(&mut **tx)
        .await?;
    }
    sqlx::query("delete from knowledge_chunks where source_id = $1 and chunk_index >= $2")
        .bind(source_id)
        .bind(chunks.len() as i32)
        .execute(&mut **tx)
        .await?;
    Ok(chunks.len())
}
