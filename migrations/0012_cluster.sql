-- Nodes sharing this database behind a SIP load balancer, and the calls
-- they hold (cluster.enabled): a trunk's max_concurrent_calls is counted
-- over every live node, and the API of any node lists the live calls of
-- all. Only the nodes write here (no API role may read or write).

create table cluster_nodes (
    node_id      text primary key,
    sip_addr     text not null default '',
    api_addr     text not null default '',
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    draining     boolean not null default false
);

create table live_calls (
    call_log_id  uuid primary key,
    node_id      text not null,
    workspace_id uuid not null,
    sip_trunk_id uuid,
    agent_id     uuid,
    direction    text not null default 'inbound',
    from_number  text not null default '',
    to_number    text not null default '',
    started_at   timestamptz not null default now()
);
create index live_calls_trunk_idx on live_calls (sip_trunk_id);
create index live_calls_workspace_idx on live_calls (workspace_id);
create index live_calls_node_idx on live_calls (node_id);

alter table cluster_nodes enable row level security;
alter table live_calls enable row level security;
revoke all on cluster_nodes, live_calls from public, anon, authenticated;

-- Takes one of the trunk's call slots for `p_call` unless the live nodes
-- already hold `p_max` of them. The advisory lock serialises claims on one
-- trunk across nodes; a node whose heartbeat is older than `p_timeout_ms`
-- holds nothing.
create function claim_trunk_slot(
    p_call uuid, p_node text, p_workspace uuid, p_trunk uuid, p_agent uuid,
    p_from text, p_to text, p_max integer, p_timeout_ms integer
) returns boolean
language plpgsql
set search_path = public, pg_temp
as $$
declare
    held integer;
begin
    perform pg_advisory_xact_lock(hashtextextended('switchboard.trunk.' || p_trunk::text, 0));
    select count(*) into held
      from live_calls c join cluster_nodes n using (node_id)
     where c.sip_trunk_id = p_trunk
       and n.heartbeat_at > now() - make_interval(secs => p_timeout_ms / 1000.0);
    if held >= p_max then
        return false;
    end if;
    insert into live_calls (call_log_id, node_id, workspace_id, sip_trunk_id, agent_id, from_number, to_number)
    values (p_call, p_node, p_workspace, p_trunk, p_agent, p_from, p_to)
    on conflict (call_log_id) do nothing;
    return true;
end
$$;
revoke execute on function claim_trunk_slot(uuid, text, uuid, uuid, uuid, text, text, integer, integer)
    from public, anon, authenticated;
