-- Media encryption per trunk (SDES-keyed SRTP, RFC 4568, on SIP over TLS):
-- 'optional' takes RTP/SAVP when a TLS caller offers it and plain RTP
-- otherwise; 'required' refuses (488) any call on the trunk without it and
-- makes outbound calls over TLS offer RTP/SAVP; 'off' refuses SRTP offers.
alter table sip_trunks
    add column srtp text not null default 'optional' check (srtp in ('off', 'optional', 'required'));
