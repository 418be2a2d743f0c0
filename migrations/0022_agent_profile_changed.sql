-- A call starts from its agent's profile and its workspace's provider
-- credentials held in memory (agent_runtime::profile_cache), not from two
-- queries per call. Every change of what they are read from notifies
-- `agent_profile_changed`, so each node drops what the change made stale:
--
--   agents                'agent:<agent id>'            that agent
--   personas              'workspace:<workspace id>'    the workspace's agents
--                                                       (a persona is shared)
--   llm_models            '*'                           everything (the model
--                                                       catalogue is global and
--                                                       rarely changes; so is
--                                                       a TRUNCATE of any)
--   workspace_llm_config  'credentials:<workspace id>'  the workspace's keys
--
-- PostgreSQL folds identical notifications of one transaction into one, and
-- delivers them only once the transaction commits.

create function agents_profile_changed_notify() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('agent_profile_changed', 'agent:' || coalesce(new.id, old.id));
    return null;
end
$$;

-- TG_ARGV[0]: what of the workspace changed ('workspace' or 'credentials').
create function workspace_profile_changed_notify() returns trigger
    language plpgsql as $$
begin
    if tg_op <> 'INSERT' then
        perform pg_notify('agent_profile_changed', tg_argv[0] || ':' || old.workspace_id);
    end if;
    -- An update notifies the new workspace too, should the row have moved
    -- (identical payloads fold into one).
    if tg_op <> 'DELETE' then
        perform pg_notify('agent_profile_changed', tg_argv[0] || ':' || new.workspace_id);
    end if;
    return null;
end
$$;

create function all_profiles_changed_notify() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('agent_profile_changed', '*');
    return null;
end
$$;

create trigger agents_profile_changed
    after insert or update or delete on agents
    for each row execute function agents_profile_changed_notify();

create trigger personas_profile_changed
    after insert or update or delete on personas
    for each row execute function workspace_profile_changed_notify('workspace');

create trigger workspace_llm_config_profile_changed
    after insert or update or delete on workspace_llm_config
    for each row execute function workspace_profile_changed_notify('credentials');

create trigger llm_models_profile_changed
    after insert or update or delete or truncate on llm_models
    for each statement execute function all_profiles_changed_notify();

-- TRUNCATE fires no row trigger.
create trigger agents_truncated_profile_changed
    after truncate on agents
    for each statement execute function all_profiles_changed_notify();

create trigger personas_truncated_profile_changed
    after truncate on personas
    for each statement execute function all_profiles_changed_notify();

create trigger workspace_llm_config_truncated_profile_changed
    after truncate on workspace_llm_config
    for each statement execute function all_profiles_changed_notify();
