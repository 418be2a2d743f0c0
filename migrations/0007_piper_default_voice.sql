-- A natural offline voice by default: new agents speak with the in-process
-- Piper voice; 'espeak' stays selectable (and is the fallback when the voice
-- cannot load). An empty tts_voice means the configured default Piper voice.
alter table agents alter column tts_provider set default 'piper';
