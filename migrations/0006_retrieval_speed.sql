-- Retrieval speed (agent_runtime::retrieval, also the API's knowledge search).
--
-- 1. The GIN index on the stored `tsv` takes new entries directly instead of
--    through its pending list: with fastupdate on, every search scans the
--    unsorted pending list (up to 4 MB after an ingest or a re-embedding)
--    until a vacuum merges it. Knowledge is written rarely and searched on
--    every caller turn, so the insert pays, not the call.
-- 2. The size of an agent's scope (the N of the IDF weights) is counted from
--    an index on (workspace_id, agent_id) — an index-only scan once the
--    table is vacuumed — instead of a scan of the whole table.
-- 3. `tsv` stays inline and uncompressed when a row is large (a 200-word
--    chunk with its embedding): it is read for every matching chunk of a
--    search, while the embedding (incompressible floats) is read for the few
--    ranked ones, so the embedding goes out of line first.

alter index knowledge_chunks_tsv_idx set (fastupdate = off);

create index knowledge_chunks_scope_idx on knowledge_chunks (workspace_id, agent_id);

alter table knowledge_chunks alter column tsv set storage main;
alter table knowledge_chunks alter column embedding set storage external;
