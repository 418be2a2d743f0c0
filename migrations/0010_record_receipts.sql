-- Counters the record writer adds to (`increment_conversation_count`,
-- `workspace_usage`) add once per record: the record's id is kept here in
-- the same transaction, so a record replayed from the spill file after it
-- was already applied adds nothing. Rows older than 30 days are pruned at
-- start. The runtime's own table: no tenant reads or writes it.
create table record_receipts (
    id uuid primary key,
    applied_at timestamptz not null default now()
);
create index record_receipts_applied_at on record_receipts (applied_at);
alter table record_receipts enable row level security;
revoke all on record_receipts from authenticated, anon;
