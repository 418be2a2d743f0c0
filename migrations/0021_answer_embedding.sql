-- A FAQ chunk's answer is embedded on its own as well: a caller's question
-- is ranked against the whole entry, its question and its answer
-- (agent_runtime::retrieval::index). Chunks embedded before this migration
-- have no answer vector and are embedded again (embed_missing_chunks).

alter table knowledge_chunks add column answer_embedding real[];
alter table knowledge_chunks alter column answer_embedding set storage external;
