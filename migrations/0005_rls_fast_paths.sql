-- Hardening and speed after 0003.
--
-- 1. Read policies were `user_has_workspace_access(workspace_id)`: one
--    function call (and a user_roles lookup) per row, and no index use, so a
--    listing that forgot its filter cost ~12 µs per row of the whole table.
--    They now compare with the caller's workspace set, computed once per
--    query as an init plan, which also lets `workspace_id = any(…)` use the
--    workspace indexes. Same rules: memberships for users; for API-key
--    claims, the one claimed workspace when the key is valid there.
-- 2. The migrations bookkeeping table is not for API roles.
-- 3. A source moved to another agent takes its chunks along.

create function accessible_workspace_ids() returns setof uuid
language sql stable security definer rows 4
set search_path = public, pg_temp
as $$
    with c as (select request_claims() as claims)
    select ur.workspace_id
    from user_roles ur, c
    where nullif(c.claims ->> 'api_key_id', '') is null
      and ur.user_id = auth.uid()
    union all
    select k.workspace_id
    from api_keys k, c
    where nullif(c.claims ->> 'api_key_id', '') is not null
      and k.id = (c.claims ->> 'api_key_id')::uuid
      and k.workspace_id::text = c.claims ->> 'workspace_id'
      and k.revoked_at is null
      and (k.expires_at is null or k.expires_at > now())
$$;
grant execute on function accessible_workspace_ids() to authenticated, service_role;

do $$
declare
    t text;
begin
    foreach t in array array[
        'personas', 'agents', 'workspace_llm_config', 'knowledge_sources', 'knowledge_chunks',
        'channel_configs', 'agent_web_widget_config', 'sip_trunks', 'phone_numbers', 'leads',
        'workspace_subscriptions', 'billing_invoices', 'call_logs', 'agent_sessions', 'messages',
        'usage_logs', 'workspace_usage', 'call_recordings', 'user_roles']
    loop
        execute format('drop policy members_read on %I', t);
        execute format($p$create policy members_read on %I for select to authenticated
                          using (workspace_id = any (array(select accessible_workspace_ids())))$p$, t);
    end loop;
end
$$;

drop policy members_read on workspaces;
create policy members_read on workspaces for select to authenticated
    using (id = any (array(select accessible_workspace_ids()))
           or (created_by is not null and created_by = auth.uid()));

do $$
begin
    if to_regclass('public._sqlx_migrations') is not null then
        revoke all on public._sqlx_migrations from public, anon, authenticated;
    end if;
end
$$;

create function knowledge_sources_carry_chunks() returns trigger
language plpgsql security definer
set search_path = public, pg_temp
as $$
begin
    update knowledge_chunks set agent_id = new.agent_id
    where source_id = new.id and agent_id is distinct from new.agent_id;
    return null;
end
$$;
create trigger knowledge_sources_carry_chunks
    after update of agent_id on knowledge_sources
    for each row when (old.agent_id is distinct from new.agent_id)
    execute function knowledge_sources_carry_chunks();
