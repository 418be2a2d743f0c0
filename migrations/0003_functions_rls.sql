-- Access functions, usage functions, grants and Row Level Security.
--
-- Who is asking comes from `request.jwt.claims` (set per transaction by the
-- API with `set local`), exactly as on Supabase. Two shapes:
--
--   user (a Supabase-compatible JWT):
--     {"sub": "<auth.users.id>", "role": "authenticated", ...}
--     → the role is the user's user_roles row for the workspace.
--
--   API key (set by the API after it has checked the key's hash):
--     {"sub": null | "<api key id>", "role": "authenticated",
--      "workspace_id": "<uuid>", "workspace_role": "OWNER|MANAGER|VIEWER",
--      "api_key_id": "<api_keys.id>"}
--     → for that one workspace, the role is workspace_role, capped at the
--       key's own role, provided the key exists in that workspace and is
--       neither revoked nor expired; no access to any other workspace.
--
-- The helpers read user_roles/api_keys themselves, so they are SECURITY
-- DEFINER with a fixed search_path: policies that call them never re-enter
-- RLS (no recursion) and cannot be hijacked through the caller's path.
-- The runtime connects as a role that bypasses RLS (superuser or
-- service_role) and sets no claims.

create function app_role_rank(r app_role) returns integer
language sql immutable parallel safe
set search_path = public, pg_temp
as $$
    select case r when 'OWNER' then 3 when 'MANAGER' then 2 when 'VIEWER' then 1 else 0 end
$$;

create function request_claims() returns jsonb
language sql stable
set search_path = public, pg_temp
as $$
    select coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}'::jsonb)
$$;

create function get_user_role(p_workspace_id uuid) returns app_role
language plpgsql stable security definer
set search_path = public, pg_temp
as $$
declare
    claims  jsonb := request_claims();
    claimed app_role;
    key_role app_role;
begin
    if p_workspace_id is null then
        return null;
    end if;
    if claims ? 'api_key_id' and nullif(claims ->> 'api_key_id', '') is not null then
        if claims ->> 'workspace_id' is distinct from p_workspace_id::text then
            return null;
        end if;
        select k.role into key_role
        from api_keys k
        where k.id = (claims ->> 'api_key_id')::uuid
          and k.workspace_id = p_workspace_id
          and k.revoked_at is null
          and (k.expires_at is null or k.expires_at > now());
        if key_role is null then
            return null;
        end if;
        claimed := coalesce(nullif(claims ->> 'workspace_role', '')::app_role, key_role);
        return case when app_role_rank(claimed) <= app_role_rank(key_role) then claimed else key_role end;
    end if;
    return (select ur.role from user_roles ur
            where ur.user_id = auth.uid() and ur.workspace_id = p_workspace_id);
end
$$;

create function has_role(p_workspace_id uuid, min_role app_role) returns boolean
language sql stable security definer
set search_path = public, pg_temp
as $$
    select coalesce(app_role_rank(get_user_role(p_workspace_id)) >= app_role_rank(min_role), false)
$$;

create function user_has_workspace_access(p_workspace_id uuid) returns boolean
language sql stable security definer
set search_path = public, pg_temp
as $$
    select get_user_role(p_workspace_id) is not null
$$;

-- The creator of a workspace that has no member yet may add themself as its
-- first OWNER (the API creates the workspace, then this row).
create function can_claim_workspace(p_workspace_id uuid) returns boolean
language sql stable security definer
set search_path = public, pg_temp
as $$
    select auth.uid() is not null
       and nullif(request_claims() ->> 'api_key_id', '') is null
       and exists (select 1 from workspaces w
                   where w.id = p_workspace_id and w.created_by = auth.uid())
       and not exists (select 1 from user_roles ur where ur.workspace_id = p_workspace_id)
$$;

-- True for the runtime's roles (superuser, service_role: anything that
-- bypasses RLS). SECURITY INVOKER on purpose: current_user is the caller.
create function is_privileged() returns boolean
language sql stable
set search_path = public, pg_temp
as $$
    select coalesce((select rolsuper or rolbypassrls from pg_roles where rolname = current_user), false)
$$;

-- The usage month is the UTC calendar month.
create function current_usage_month() returns date
language sql stable
set search_path = public, pg_temp
as $$
    select date_trunc('month', now() at time zone 'utc')::date
$$;

-- This month's usage row (zeros when nothing was used yet).
create function get_workspace_usage(p_workspace_id uuid) returns workspace_usage
language plpgsql stable
set search_path = public, pg_temp
as $$
declare
    r workspace_usage;
begin
    if not (is_privileged() or user_has_workspace_access(p_workspace_id)) then
        raise exception 'no access to workspace %', p_workspace_id using errcode = '42501';
    end if;
    select * into r from workspace_usage u
    where u.workspace_id = p_workspace_id and u.month = current_usage_month();
    if not found then
        r.workspace_id := p_workspace_id;
        r.month := current_usage_month();
        r.conversations := 0;
        r.messages := 0;
        r.tokens_used := 0;
        r.call_seconds := 0;
        r.stt_seconds := 0;
        r.tts_characters := 0;
    end if;
    return r;
end
$$;

-- One more conversation this month; returns the new count. A single
-- INSERT … ON CONFLICT DO UPDATE, so concurrent callers never lose an update.
-- SECURITY INVOKER: only roles that may write workspace_usage (the runtime)
-- can use it.
create function increment_conversation_count(p_workspace_id uuid) returns integer
language sql volatile
set search_path = public, pg_temp
as $$
    insert into workspace_usage as u (workspace_id, month, conversations)
    values (p_workspace_id, current_usage_month(), 1)
    on conflict (workspace_id, month)
        do update set conversations = u.conversations + 1
    returning u.conversations
$$;

-- The plan in force: the current subscription's, else the default plan.
create function workspace_plan(p_workspace_id uuid) returns pricing_plans
language sql stable
set search_path = public, pg_temp
as $$
    select coalesce(
        (select p from workspace_subscriptions s join pricing_plans p on p.id = s.plan_id
         where s.workspace_id = p_workspace_id and s.status in ('trialing', 'active', 'past_due')
         order by s.created_at desc limit 1),
        (select p from pricing_plans p where p.is_default limit 1))
$$;

-- False when this month's conversations or call minutes have reached the
-- plan's limit (a null limit is unlimited; no plan at all limits nothing).
create function check_usage_limit(p_workspace_id uuid) returns boolean
language plpgsql stable
set search_path = public, pg_temp
as $$
declare
    plan  pricing_plans := workspace_plan(p_workspace_id);
    usage workspace_usage;
begin
    if plan.id is null then
        return true;
    end if;
    select * into usage from workspace_usage u
    where u.workspace_id = p_workspace_id and u.month = current_usage_month();
    if not found then
        return coalesce(plan.conversation_limit, 1) > 0 and coalesce(plan.minute_limit, 1) > 0;
    end if;
    return (plan.conversation_limit is null or usage.conversations < plan.conversation_limit)
       and (plan.minute_limit is null or usage.call_seconds < plan.minute_limit::bigint * 60);
end
$$;

-- A chunk belongs to its source's agent, whatever the writer sent.
create function knowledge_chunks_follow_source() returns trigger
language plpgsql security definer
set search_path = public, pg_temp
as $$
begin
    select s.agent_id into new.agent_id
    from knowledge_sources s
    where s.id = new.source_id and s.workspace_id = new.workspace_id;
    return new;
end
$$;
create trigger knowledge_chunks_follow_source
    before insert or update of source_id, agent_id, workspace_id on knowledge_chunks
    for each row execute function knowledge_chunks_follow_source();

-- ─────────────────────────────── grants ───────────────────────────────

grant usage on schema public to anon, authenticated, service_role;
revoke all on all tables in schema public from anon;
grant select, insert, update, delete on all tables in schema public to authenticated;
grant usage, select on all sequences in schema public to authenticated;
grant all on all tables in schema public to service_role;
grant all on all sequences in schema public to service_role;
alter default privileges in schema public grant select, insert, update, delete on tables to authenticated;
alter default privileges in schema public grant usage, select on sequences to authenticated;
alter default privileges in schema public grant all on tables to service_role;

-- Catalogues are read-only for users.
revoke insert, update, delete on llm_models, pricing_plans from authenticated;
-- Runtime-written tables: users read them; only staff fields are editable.
revoke insert, update, delete on call_logs, messages, usage_logs, workspace_usage,
    call_recordings, agent_sessions, chat_sessions from authenticated;
grant update (internal_notes, summary) on agent_sessions to authenticated;
-- Workspace credits and ownership are not the users' to change.
revoke update on workspaces from authenticated;
grant update (name, slug, settings) on workspaces to authenticated;

-- Functions: PUBLIC may execute by default; usage writers are for the runtime.
revoke execute on function increment_conversation_count(uuid) from public;
grant execute on function increment_conversation_count(uuid) to service_role;
grant execute on function get_user_role(uuid), has_role(uuid, app_role),
    user_has_workspace_access(uuid), get_workspace_usage(uuid), check_usage_limit(uuid)
    to authenticated, service_role;

-- ───────────────────────── row level security ─────────────────────────

do $$
declare
    t text;
begin
    foreach t in array array[
        'workspaces', 'profiles', 'user_roles', 'api_keys', 'llm_models', 'personas', 'agents',
        'workspace_llm_config', 'knowledge_sources', 'knowledge_chunks', 'channel_configs',
        'agent_web_widget_config', 'sip_trunks', 'phone_numbers', 'agent_sessions', 'messages',
        'call_logs', 'call_recordings', 'leads', 'pricing_plans', 'workspace_subscriptions',
        'workspace_usage', 'usage_logs', 'billing_invoices']
    loop
        execute format('alter table %I enable row level security', t);
    end loop;

    -- Configuration: members read, MANAGER and up write.
    foreach t in array array[
        'personas', 'agents', 'workspace_llm_config', 'knowledge_sources', 'knowledge_chunks',
        'channel_configs', 'agent_web_widget_config', 'sip_trunks', 'phone_numbers', 'leads']
    loop
        execute format($p$create policy members_read on %I for select to authenticated
                          using (user_has_workspace_access(workspace_id))$p$, t);
        execute format($p$create policy managers_insert on %I for insert to authenticated
                          with check (has_role(workspace_id, 'MANAGER'))$p$, t);
        execute format($p$create policy managers_update on %I for update to authenticated
                          using (has_role(workspace_id, 'MANAGER'))
                          with check (has_role(workspace_id, 'MANAGER'))$p$, t);
        execute format($p$create policy managers_delete on %I for delete to authenticated
                          using (has_role(workspace_id, 'MANAGER'))$p$, t);
    end loop;

    -- Billing: members read, OWNER writes.
    foreach t in array array['workspace_subscriptions', 'billing_invoices'] loop
        execute format($p$create policy members_read on %I for select to authenticated
                          using (user_has_workspace_access(workspace_id))$p$, t);
        execute format($p$create policy owners_insert on %I for insert to authenticated
                          with check (has_role(workspace_id, 'OWNER'))$p$, t);
        execute format($p$create policy owners_update on %I for update to authenticated
                          using (has_role(workspace_id, 'OWNER'))
                          with check (has_role(workspace_id, 'OWNER'))$p$, t);
        execute format($p$create policy owners_delete on %I for delete to authenticated
                          using (has_role(workspace_id, 'OWNER'))$p$, t);
    end loop;

    -- Written by the runtime only (it bypasses RLS); members read.
    foreach t in array array[
        'call_logs', 'agent_sessions', 'messages', 'usage_logs', 'workspace_usage', 'call_recordings']
    loop
        execute format($p$create policy members_read on %I for select to authenticated
                          using (user_has_workspace_access(workspace_id))$p$, t);
    end loop;

    -- Global catalogues.
    foreach t in array array['llm_models', 'pricing_plans'] loop
        execute format($p$create policy authenticated_read on %I for select to authenticated
                          using (true)$p$, t);
    end loop;
end
$$;

-- Staff notes and summaries on sessions (column grants limit the rest).
create policy managers_annotate on agent_sessions for update to authenticated
    using (has_role(workspace_id, 'MANAGER'))
    with check (has_role(workspace_id, 'MANAGER'));

-- Workspaces: members read (the creator too, before the first OWNER row
-- exists); any signed-in user creates one; MANAGER edits; OWNER deletes.
create policy members_read on workspaces for select to authenticated
    using (user_has_workspace_access(id) or (created_by is not null and created_by = auth.uid()));
create policy users_create on workspaces for insert to authenticated
    with check (auth.uid() is not null
                and created_by = auth.uid()
                and nullif(request_claims() ->> 'api_key_id', '') is null);
create policy managers_update on workspaces for update to authenticated
    using (has_role(id, 'MANAGER'))
    with check (has_role(id, 'MANAGER'));
create policy owners_delete on workspaces for delete to authenticated
    using (has_role(id, 'OWNER'));

-- Profiles: one's own row.
create policy own_read on profiles for select to authenticated
    using (id = auth.uid());
create policy own_insert on profiles for insert to authenticated
    with check (id = auth.uid()
                and (workspace_id is null or user_has_workspace_access(workspace_id)));
create policy own_update on profiles for update to authenticated
    using (id = auth.uid())
    with check (id = auth.uid()
                and (workspace_id is null or user_has_workspace_access(workspace_id)));
create policy own_delete on profiles for delete to authenticated
    using (id = auth.uid());

-- Membership: members see who else is in; OWNER manages it, and the
-- creator of a memberless workspace may add themself as OWNER.
create policy members_read on user_roles for select to authenticated
    using (user_has_workspace_access(workspace_id));
create policy owners_insert on user_roles for insert to authenticated
    with check (has_role(workspace_id, 'OWNER')
                or (user_id = auth.uid() and role = 'OWNER' and can_claim_workspace(workspace_id)));
create policy owners_update on user_roles for update to authenticated
    using (has_role(workspace_id, 'OWNER'))
    with check (has_role(workspace_id, 'OWNER'));
create policy owners_delete on user_roles for delete to authenticated
    using (has_role(workspace_id, 'OWNER'));

-- API keys: OWNER only, reads included (the hash is not for everyone).
create policy owners_all on api_keys for all to authenticated
    using (has_role(workspace_id, 'OWNER'))
    with check (has_role(workspace_id, 'OWNER'));
