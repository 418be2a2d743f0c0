-- Semantic retrieval from memory (agent_runtime::retrieval).
--
-- 1. Each vector carries the id of the model that made it: vectors of
--    different models do not compare, so a chunk whose model is not the
--    configured one is re-embedded (and ignored until then). Vectors stored
--    before this migration have no model and are re-embedded.
-- 2. A FAQ chunk ("Q: …\nA: …") also has its question embedded alone: a
--    caller's question is matched against the FAQ's question as well as
--    the whole entry.
-- 3. Every change of knowledge_chunks notifies `knowledge_changed` with the
--    workspace id, so each node rebuilds the in-memory indexes of that
--    workspace. PostgreSQL folds identical notifications of one transaction
--    into one, so a bulk ingest sends one per workspace.

alter table knowledge_chunks
    add column embedding_model text,
    add column question_embedding real[];
alter table knowledge_chunks alter column question_embedding set storage external;

create function knowledge_chunks_notify() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('knowledge_changed', coalesce(new.workspace_id, old.workspace_id)::text);
    return null;
end
$$;

create trigger knowledge_chunks_notify
    after insert or update or delete on knowledge_chunks
    for each row execute function knowledge_chunks_notify();
