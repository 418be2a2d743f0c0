-- Transfers that work with carriers (issue 12, item 4).
-- agents.transfer_mode: 'blind' hands the caller over by REFER to
-- transfer_to; 'warm' calls transfer_to first, tells the person who is
-- calling and why, then bridges the caller to them. A failed transfer makes
-- the agent say transfer_failed_message (null: a default line) and carry on.
alter table agents
    add column transfer_mode text not null default 'blind' check (transfer_mode in ('blind', 'warm')),
    add column transfer_failed_message text;

-- The last transfer of a call: its target as configured, how it was done,
-- how it ended (transferred, refused, failed, timeout, busy, no_answer) and
-- the SIP code that decided it. A failed transfer leaves the call going on,
-- so the call's own status does not tell it.
alter table call_logs
    add column transfer_target text,
    add column transfer_mode text check (transfer_mode in ('blind', 'warm')),
    add column transfer_outcome text check (transfer_outcome in
        ('transferred', 'refused', 'failed', 'timeout', 'busy', 'no_answer')),
    add column transfer_sip_code int;

-- transfer_to may also be a tel: URI of an E.164 number (RFC 3966, with
-- parameters), kept as written: the REFER's Refer-To carries it unchanged.
alter table agents drop constraint if exists agents_transfer_to_check;
alter table agents add constraint agents_transfer_to_check
    check (transfer_to ~ '^(\+[0-9]{8,15}|tel:\+[0-9]{8,15}(;[A-Za-z0-9=;._%+-]*)?|sips?:[^[:space:]]+)$');
