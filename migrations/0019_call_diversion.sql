-- A forwarded call's diverting number (the first Diversion header, RFC 5806,
-- as Twilio and Telnyx send it), in E.164 as the admitting trunk's numbering
-- plan reads it.
alter table call_logs add column diverted_from text;
