-- Answering-machine detection on an agent's outbound calls. When on, the
-- agent waits for the detector's verdict before its greeting: a person (or
-- no verdict) hears the greeting at once; on a machine the agent hangs up
-- ('hangup') or waits for the greeting's beep and leaves
-- `voicemail_message` ('voicemail'). The verdict and how long it took after
-- the answer are kept on the call's row.
alter table agents
    add column amd_enabled boolean not null default false,
    add column amd_action text not null default 'hangup' check (amd_action in ('hangup', 'voicemail')),
    add column voicemail_message text;

alter table call_logs
    add column amd_result text check (amd_result in ('human', 'machine', 'unknown')),
    add column amd_decision_ms integer check (amd_decision_ms >= 0);
