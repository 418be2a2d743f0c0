-- Roles, the `auth` schema and `auth.uid()`, Supabase-compatible.
--
-- On a Supabase project all of this already exists and is left alone; on a
-- plain PostgreSQL it is created. Roles are cluster-wide, so several
-- databases may be migrated at once (tests do that): creation tolerates a
-- concurrent creator instead of failing.

do $$
declare
    spec record;
begin
    for spec in
        select * from (values
            ('anon',          'nologin noinherit'),
            ('authenticated', 'nologin noinherit'),
            ('service_role',  'nologin noinherit bypassrls')
        ) as r(name, attrs)
    loop
        if not exists (select 1 from pg_roles where rolname = spec.name) then
            begin
                execute format('create role %I %s', spec.name, spec.attrs);
            exception
                -- another session created it between our check and our create
                when duplicate_object or unique_violation then null;
            end;
        end if;
    end loop;
end
$$;

-- The API connects as one login role and switches with `set local role
-- authenticated` per request; a superuser may always do that, any other
-- migrating role needs membership (granted when we are allowed to).
do $$
begin
    if not (select rolsuper from pg_roles where rolname = current_user) then
        begin
            execute format('grant anon, authenticated, service_role to %I', current_user);
        exception when others then
            raise notice 'could not grant API roles to %: %', current_user, sqlerrm;
        end;
    end if;
end
$$;

create schema if not exists auth;

-- A minimal stand-in for Supabase Auth's table, only where there is none.
do $$
begin
    if to_regclass('auth.users') is null then
        create table auth.users (
            id                 uuid primary key default gen_random_uuid(),
            email              text not null unique,
            encrypted_password text,            -- argon2id PHC string
            last_sign_in_at    timestamptz,
            created_at         timestamptz not null default now(),
            updated_at         timestamptz not null default now()
        );
        comment on table auth.users is
            'Minimal stand-in for Supabase Auth users (created by Switchboard because none existed).';
    end if;
end
$$;

-- auth.uid(): the JWT subject, read exactly as Supabase does. Defined only
-- when absent so that Supabase's own definition is never replaced.
do $do$
begin
    if to_regprocedure('auth.uid()') is null then
        execute $fn$
            create function auth.uid() returns uuid
            language sql stable
            as $body$
                select coalesce(
                    nullif(current_setting('request.jwt.claim.sub', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
                )::uuid
            $body$
        $fn$;
    end if;
end
$do$;

do $$
begin
    grant usage on schema auth to anon, authenticated, service_role;
    grant execute on function auth.uid() to anon, authenticated, service_role;
exception when insufficient_privilege then
    -- Supabase: the auth schema belongs to supabase_auth_admin, and these
    -- grants are already in place there.
    raise notice 'auth schema grants left as they are: %', sqlerrm;
end
$$;
