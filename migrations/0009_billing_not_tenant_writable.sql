-- Billing is written by the operator's side only: the service role and the
-- runtime (which bypasses RLS). A workspace OWNER could insert its own
-- `workspace_subscriptions` row (as Supabase's PostgREST would let it) and
-- subscribe itself to the biggest plan, which `check_usage_limit` trusts.
-- Members keep reading both tables.
drop policy owners_insert on workspace_subscriptions;
drop policy owners_update on workspace_subscriptions;
drop policy owners_delete on workspace_subscriptions;
drop policy owners_insert on billing_invoices;
drop policy owners_update on billing_invoices;
drop policy owners_delete on billing_invoices;

-- No write grant either, so a policy added by mistake opens nothing.
revoke insert, update, delete, truncate on workspace_subscriptions, billing_invoices
    from authenticated, anon;
