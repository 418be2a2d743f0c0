-- The unified schema of SCHEMA.md: enums, tables, indexes, updated_at
-- triggers and the chat_sessions view.
--
-- Tenant safety: every tenant-owned row carries workspace_id, and a child
-- points at its parent with a composite key (parent_id, workspace_id) →
-- parent(id, workspace_id). A phone number can therefore never route to an
-- agent of another workspace, a chunk never belong to another workspace's
-- source, and so on, whatever the API does. Nullable references use
-- `on delete set null (column)` (PostgreSQL 15) so the workspace_id stays.

create type agent_status as enum ('draft', 'live');
create type app_role as enum ('OWNER', 'MANAGER', 'VIEWER');
create type business_domain as enum ('healthcare', 'retail', 'finance', 'realestate', 'hospitality', 'other');
create type persona_tone as enum ('professional', 'friendly', 'casual', 'formal');
create type fallback_policy as enum ('apologize', 'escalate', 'retry', 'transfer');
create type knowledge_type as enum ('PDF', 'URL', 'TEXT', 'FAQ');
create type subscription_status as enum ('trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused');

create function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end
$$;

-- ───────────────────────── tenancy and access ─────────────────────────

create table workspaces (
    id              uuid primary key default gen_random_uuid(),
    name            text not null check (length(name) between 1 and 200),
    slug            text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    credits_balance numeric(14, 4) not null default 0,
    settings        jsonb not null default '{}',
    -- who created it: lets the creator see it and add the first OWNER row
    -- before any membership exists (see the user_roles policies)
    created_by      uuid references auth.users (id) on delete set null default auth.uid(),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index workspaces_created_by_idx on workspaces (created_by);

create table profiles (
    id           uuid primary key references auth.users (id) on delete cascade,
    workspace_id uuid references workspaces (id) on delete set null,
    full_name    text,
    avatar_url   text,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create index profiles_workspace_id_idx on profiles (workspace_id);

create table user_roles (
    id           uuid primary key default gen_random_uuid(),
    user_id      uuid not null references auth.users (id) on delete cascade,
    workspace_id uuid not null references workspaces (id) on delete cascade,
    role         app_role not null default 'VIEWER',
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (user_id, workspace_id)
);
create index user_roles_workspace_id_idx on user_roles (workspace_id);

create table api_keys (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    name         text not null,
    prefix       text not null unique,          -- shown to users, the lookup key
    key_hash     text not null,                 -- never the key itself
    role         app_role not null default 'VIEWER',
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create index api_keys_workspace_id_idx on api_keys (workspace_id);

-- ─────────────────────────────── agents ───────────────────────────────

create table llm_models (
    id                 uuid primary key default gen_random_uuid(),
    provider           text not null,
    name               text not null,
    model_id           text not null,
    context_window     integer check (context_window > 0),
    input_cost_per_1k  numeric(12, 6) not null default 0 check (input_cost_per_1k >= 0),
    output_cost_per_1k numeric(12, 6) not null default 0 check (output_cost_per_1k >= 0),
    is_default         boolean not null default false,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    unique (provider, model_id)
);
create unique index llm_models_one_default on llm_models (is_default) where is_default;

create table personas (
    id                uuid primary key default gen_random_uuid(),
    workspace_id      uuid not null references workspaces (id) on delete cascade,
    name              text not null,
    tone              persona_tone not null default 'professional',
    greeting          text,
    fallback_message  text,
    escalation_policy fallback_policy not null default 'apologize',
    instructions      text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    unique (id, workspace_id)
);
create index personas_workspace_id_idx on personas (workspace_id);

create table agents (
    id                  uuid primary key default gen_random_uuid(),
    workspace_id        uuid not null references workspaces (id) on delete cascade,
    name                text not null check (length(name) between 1 and 200),
    description         text,
    domain              business_domain not null default 'other',
    status              agent_status not null default 'draft',
    persona_id          uuid,
    goals               text[] not null default '{}',
    channels            text[] not null default '{}',
    llm_model_id        uuid references llm_models (id) on delete set null,
    instructions        text,
    temperature         double precision not null default 0.3 check (temperature between 0 and 2),
    max_tokens          integer not null default 300 check (max_tokens > 0),
    context_window_size integer not null default 4096 check (context_window_size > 0),
    -- voice
    stt_provider        text not null default 'whisper',
    stt_language        text,
    tts_provider        text not null default 'espeak',
    tts_voice           text,
    tts_speed           double precision not null default 1.0 check (tts_speed between 0.25 and 4),
    interruptible       boolean not null default true,
    silence_timeout_ms  integer not null default 8000 check (silence_timeout_ms between 500 and 600000),
    max_call_seconds    integer not null default 600 check (max_call_seconds between 10 and 86400),
    recording_enabled   boolean not null default false,
    transfer_to         text check (transfer_to ~ '^(\+[0-9]{8,15}|sips?:[^[:space:]]+)$'),
    config              jsonb not null default '{}',
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    unique (id, workspace_id),
    foreign key (persona_id, workspace_id) references personas (id, workspace_id)
        on delete set null (persona_id)
);
create index agents_workspace_id_idx on agents (workspace_id);
create index agents_persona_id_idx on agents (persona_id);
create index agents_llm_model_id_idx on agents (llm_model_id);
create index agents_status_idx on agents (status);

create table workspace_llm_config (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    provider     text not null,                 -- openai, anthropic, elevenlabs, deepgram, …
    base_url     text,
    api_key      text,                          -- encrypted at rest by the API
    is_active    boolean not null default true,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (workspace_id, provider)
);

-- ────────────────────────────── knowledge ─────────────────────────────

create table knowledge_sources (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    agent_id     uuid,                          -- null = the whole workspace
    name         text not null,
    type         knowledge_type not null,
    content      text,
    url          text,
    status       text not null default 'pending'
                 check (status in ('pending', 'processing', 'ready', 'failed')),
    error        text,
    chunk_count  integer not null default 0 check (chunk_count >= 0),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (id, workspace_id),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id) on delete cascade
);
create index knowledge_sources_workspace_id_idx on knowledge_sources (workspace_id);
create index knowledge_sources_agent_id_idx on knowledge_sources (agent_id);

create table knowledge_chunks (
    id           uuid primary key default gen_random_uuid(),
    source_id    uuid not null,
    workspace_id uuid not null references workspaces (id) on delete cascade,
    agent_id     uuid,                          -- copied from the source by a trigger
    content      text not null,
    chunk_index  integer not null check (chunk_index >= 0),
    token_count  integer check (token_count >= 0),
    embedding    real[],
    tsv          tsvector generated always as (to_tsvector('english', content)) stored,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (source_id, chunk_index),
    foreign key (source_id, workspace_id) references knowledge_sources (id, workspace_id) on delete cascade,
    foreign key (agent_id, workspace_id) references agents (id, workspace_id) on delete cascade
);
create index knowledge_chunks_workspace_id_idx on knowledge_chunks (workspace_id);
create index knowledge_chunks_agent_id_idx on knowledge_chunks (agent_id);
create index knowledge_chunks_tsv_idx on knowledge_chunks using gin (tsv);

-- ────────────────────────────── channels ──────────────────────────────

create table channel_configs (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    agent_id     uuid not null,
    channel      text not null check (channel in ('phone', 'web', 'sms', 'whatsapp')),
    config       jsonb not null default '{}',
    enabled      boolean not null default true,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (agent_id, channel),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id) on delete cascade
);
create index channel_configs_workspace_id_idx on channel_configs (workspace_id);

create table agent_web_widget_config (
    id              uuid primary key default gen_random_uuid(),
    workspace_id    uuid not null references workspaces (id) on delete cascade,
    agent_id        uuid not null unique,
    primary_color   text check (primary_color ~ '^#[0-9A-Fa-f]{6}$'),
    position        text not null default 'bottom-right',
    welcome_message text,
    allowed_domains text[] not null default '{}', -- also the allowed origins for browser calls
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id) on delete cascade
);
create index agent_web_widget_config_workspace_id_idx on agent_web_widget_config (workspace_id);

-- ────────────────────────────── telephony ─────────────────────────────

create table sip_trunks (
    id                   uuid primary key default gen_random_uuid(),
    workspace_id         uuid not null references workspaces (id) on delete cascade,
    name                 text not null,
    provider             text not null default 'generic' check (provider in ('twilio', 'telnyx', 'generic')),
    direction            text not null default 'both' check (direction in ('inbound', 'outbound', 'both')),
    -- allowed source addresses; the cast rejects anything that is not an address/prefix
    inbound_cidrs        text[] not null default '{}' check (inbound_cidrs::inet[] is not null),
    inbound_username     text,
    inbound_password     text,                  -- encrypted at rest
    outbound_host        text,
    outbound_port        integer check (outbound_port between 1 and 65535),
    outbound_transport   text not null default 'udp' check (outbound_transport in ('udp', 'tcp', 'tls')),
    outbound_username    text,
    outbound_password    text,                  -- encrypted at rest
    from_domain          text,
    codecs               text[] not null default '{PCMU,PCMA}', -- preference order
    max_concurrent_calls integer not null default 10 check (max_concurrent_calls > 0),
    enabled              boolean not null default true,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    unique (id, workspace_id),
    unique (workspace_id, name)
);
create index sip_trunks_enabled_idx on sip_trunks (enabled) where enabled;

create table phone_numbers (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    e164         text not null unique check (e164 ~ '^\+[0-9]{8,15}$'),
    sip_trunk_id uuid,
    agent_id     uuid,
    label        text,
    enabled      boolean not null default true,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (id, workspace_id),
    foreign key (sip_trunk_id, workspace_id) references sip_trunks (id, workspace_id)
        on delete set null (sip_trunk_id),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id)
        on delete set null (agent_id)
);
create index phone_numbers_workspace_id_idx on phone_numbers (workspace_id);
create index phone_numbers_sip_trunk_id_idx on phone_numbers (sip_trunk_id);
create index phone_numbers_agent_id_idx on phone_numbers (agent_id);

-- ──────────────────────────── conversations ───────────────────────────

create table agent_sessions (
    id             uuid primary key default gen_random_uuid(),
    workspace_id   uuid not null references workspaces (id) on delete cascade,
    agent_id       uuid,
    channel        text not null check (channel in ('phone', 'web', 'text', 'sms', 'whatsapp')),
    status         text not null default 'active'
                   check (status in ('active', 'completed', 'escalated', 'failed')),
    caller         text,                        -- number or client id
    metadata       jsonb not null default '{}',
    summary        text,
    internal_notes text,
    started_at     timestamptz not null default now(),
    ended_at       timestamptz,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    unique (id, workspace_id),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id)
        on delete set null (agent_id)
);
create index agent_sessions_workspace_started_idx on agent_sessions (workspace_id, started_at);
create index agent_sessions_agent_id_idx on agent_sessions (agent_id);
create index agent_sessions_status_idx on agent_sessions (status);

create table messages (
    id                 uuid primary key default gen_random_uuid(),
    workspace_id       uuid not null references workspaces (id) on delete cascade,
    session_id         uuid not null,
    role               text not null check (role in ('user', 'assistant', 'system', 'tool')),
    content            text not null default '',
    audio_url          text,
    interrupted        boolean not null default false,
    stt_ms             integer,
    llm_first_token_ms integer,
    tts_first_byte_ms  integer,
    tokens_in          integer,
    tokens_out         integer,
    created_at         timestamptz not null default now(),
    foreign key (session_id, workspace_id) references agent_sessions (id, workspace_id) on delete cascade
);
create index messages_session_created_idx on messages (session_id, created_at);
create index messages_workspace_id_idx on messages (workspace_id);

create table call_logs (
    id              uuid primary key default gen_random_uuid(),
    workspace_id    uuid not null references workspaces (id) on delete cascade,
    agent_id        uuid,
    phone_number_id uuid,
    sip_trunk_id    uuid,
    session_id      uuid,
    direction       text not null check (direction in ('inbound', 'outbound', 'web')),
    sip_call_id     text,
    from_number     text,
    to_number       text,
    status          text not null default 'ringing'
                    check (status in ('ringing', 'in_progress', 'completed', 'failed', 'rejected',
                                      'busy', 'no_answer', 'transferred')),
    sip_code        integer check (sip_code between 100 and 699),
    hangup_by       text check (hangup_by in ('caller', 'agent', 'system')),
    hangup_reason   text,
    codec           text,
    started_at      timestamptz not null default now(),
    answered_at     timestamptz,
    ended_at        timestamptz,
    duration_ms     bigint check (duration_ms >= 0),
    latency         jsonb,                      -- per-turn voice-to-voice figures
    cost            numeric(12, 6),
    node_id         text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (id, workspace_id),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id)
        on delete set null (agent_id),
    foreign key (phone_number_id, workspace_id) references phone_numbers (id, workspace_id)
        on delete set null (phone_number_id),
    foreign key (sip_trunk_id, workspace_id) references sip_trunks (id, workspace_id)
        on delete set null (sip_trunk_id),
    foreign key (session_id, workspace_id) references agent_sessions (id, workspace_id)
        on delete set null (session_id)
);
create index call_logs_workspace_started_idx on call_logs (workspace_id, started_at);
create index call_logs_sip_call_id_idx on call_logs (sip_call_id);
create index call_logs_agent_id_idx on call_logs (agent_id);
create index call_logs_phone_number_id_idx on call_logs (phone_number_id);
create index call_logs_sip_trunk_id_idx on call_logs (sip_trunk_id);
create index call_logs_session_id_idx on call_logs (session_id);
create index call_logs_status_idx on call_logs (status);

create table call_recordings (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    call_log_id  uuid not null,
    storage_path text not null,
    format       text not null default 'wav',
    duration_ms  bigint check (duration_ms >= 0),
    size_bytes   bigint check (size_bytes >= 0),
    created_at   timestamptz not null default now(),
    foreign key (call_log_id, workspace_id) references call_logs (id, workspace_id) on delete cascade
);
create index call_recordings_workspace_id_idx on call_recordings (workspace_id);
create index call_recordings_call_log_id_idx on call_recordings (call_log_id);

create table leads (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    agent_id     uuid,
    session_id   uuid,
    name         text,
    email        text,
    phone        text,
    channel      text,
    metadata     jsonb not null default '{}',
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    foreign key (agent_id, workspace_id) references agents (id, workspace_id)
        on delete set null (agent_id),
    foreign key (session_id, workspace_id) references agent_sessions (id, workspace_id)
        on delete set null (session_id)
);
create index leads_workspace_id_idx on leads (workspace_id, created_at);
create index leads_agent_id_idx on leads (agent_id);
create index leads_session_id_idx on leads (session_id);

-- chat_sessions: seed 000's shape over agent_sessions. security_invoker makes
-- the caller's RLS on agent_sessions and messages apply.
create view chat_sessions with (security_invoker = true) as
select s.id,
       s.workspace_id,
       s.agent_id,
       s.channel,
       s.status,
       coalesce((select jsonb_agg(jsonb_build_object(
                            'id', m.id,
                            'role', m.role,
                            'content', m.content,
                            'interrupted', m.interrupted,
                            'created_at', m.created_at)
                        order by m.created_at, m.id)
                 from messages m
                 where m.session_id = s.id),
                '[]'::jsonb) as messages,
       s.caller,
       s.summary,
       s.internal_notes,
       s.metadata,
       s.started_at,
       s.ended_at,
       s.created_at
from agent_sessions s;

-- ────────────────────────── billing and usage ─────────────────────────

create table pricing_plans (
    id                 uuid primary key default gen_random_uuid(),
    name               text not null unique,
    stripe_price_id    text,
    price_monthly      numeric(10, 2),          -- null = on request
    price_yearly       numeric(10, 2),
    conversation_limit integer check (conversation_limit >= 0), -- per month; null = unlimited
    minute_limit       integer check (minute_limit >= 0),       -- call minutes per month; null = unlimited
    features           jsonb not null default '{}',
    is_default         boolean not null default false, -- the plan of a workspace without subscription
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now()
);
create unique index pricing_plans_one_default on pricing_plans (is_default) where is_default;

create table workspace_subscriptions (
    id                     uuid primary key default gen_random_uuid(),
    workspace_id           uuid not null references workspaces (id) on delete cascade,
    plan_id                uuid not null references pricing_plans (id) on delete restrict,
    stripe_subscription_id text unique,
    status                 subscription_status not null default 'active',
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now()
);
create index workspace_subscriptions_workspace_id_idx on workspace_subscriptions (workspace_id);
create index workspace_subscriptions_plan_id_idx on workspace_subscriptions (plan_id);
-- at most one subscription in force per workspace
create unique index workspace_subscriptions_one_current
    on workspace_subscriptions (workspace_id) where status in ('trialing', 'active', 'past_due');

create table workspace_usage (
    id             uuid primary key default gen_random_uuid(),
    workspace_id   uuid not null references workspaces (id) on delete cascade,
    month          date not null check (month = date_trunc('month', month)::date),
    conversations  integer not null default 0 check (conversations >= 0),
    messages       bigint not null default 0,
    tokens_used    bigint not null default 0,
    call_seconds   bigint not null default 0,
    stt_seconds    numeric(14, 3) not null default 0,
    tts_characters bigint not null default 0,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    unique (workspace_id, month)
);

create table usage_logs (
    id           uuid primary key default gen_random_uuid(),
    workspace_id uuid not null references workspaces (id) on delete cascade,
    session_id   uuid,
    call_log_id  uuid,
    kind         text not null check (kind in ('llm_tokens_in', 'llm_tokens_out', 'stt_seconds',
                                               'tts_characters', 'call_seconds')),
    quantity     numeric(18, 6) not null,
    unit_cost    numeric(18, 9),
    cost         numeric(18, 9),
    model        text,
    created_at   timestamptz not null default now(),
    foreign key (session_id, workspace_id) references agent_sessions (id, workspace_id)
        on delete set null (session_id),
    foreign key (call_log_id, workspace_id) references call_logs (id, workspace_id)
        on delete set null (call_log_id)
);
create index usage_logs_workspace_created_idx on usage_logs (workspace_id, created_at);
create index usage_logs_session_id_idx on usage_logs (session_id);
create index usage_logs_call_log_id_idx on usage_logs (call_log_id);

create table billing_invoices (
    id                uuid primary key default gen_random_uuid(),
    workspace_id      uuid not null references workspaces (id) on delete cascade,
    stripe_invoice_id text unique,
    amount            numeric(12, 2) not null,
    status            text not null default 'pending' check (status in ('paid', 'pending', 'failed')),
    invoice_url       text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);
create index billing_invoices_workspace_id_idx on billing_invoices (workspace_id, created_at);

-- updated_at on every mutable table
do $$
declare
    t text;
begin
    foreach t in array array[
        'workspaces', 'profiles', 'user_roles', 'api_keys', 'llm_models', 'personas', 'agents',
        'workspace_llm_config', 'knowledge_sources', 'knowledge_chunks', 'channel_configs',
        'agent_web_widget_config', 'sip_trunks', 'phone_numbers', 'agent_sessions', 'call_logs',
        'leads', 'pricing_plans', 'workspace_subscriptions', 'workspace_usage', 'billing_invoices']
    loop
        execute format(
            'create trigger %I before update on %I for each row execute function set_updated_at()',
            t || '_updated_at', t);
    end loop;
end
$$;
