-- How each trunk writes national numbers (its country calling code and the
-- length of a national significant number): "02079460000" on a UK trunk
-- (44, 10) is +442079460000; the default stays NANP (1, 10).
alter table sip_trunks
    add column country_code integer not null default 1 check (country_code between 1 and 999),
    add column national_length integer not null default 10 check (national_length between 4 and 14);
