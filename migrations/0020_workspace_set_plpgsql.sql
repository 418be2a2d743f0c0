-- accessible_workspace_ids() in PL/pgSQL instead of SQL, same body and rules.
-- A SQL function that cannot be inlined (it is SECURITY DEFINER) is parsed
-- and planned again in every statement that calls it: 12 % of PostgreSQL's
-- CPU time under a load of API list requests (one call per request, as the
-- init plan of the read policies). PL/pgSQL keeps the plan for the session.

create or replace function accessible_workspace_ids() returns setof uuid
language plpgsql stable security definer rows 4
set search_path = public, pg_temp
as $$
begin
    return query
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
      and (k.expires_at is null or k.expires_at > now());
end
$$;
