-- The web widget's public key: pasted into a business's site with
-- /widget.js, it lets browsers from the widget's allowed_domains read the
-- widget's look and call its agent (WHIP). Public by nature (it is in the
-- page), so it proves only "a page this business chose"; the Origin check
-- does the rest. Rotating it (the API) cuts off every page that has the
-- old one. 'pk_' + 64 hex characters of gen_random_uuid() (244 random
-- bits; core PostgreSQL, no pgcrypto).
alter table agent_web_widget_config
    add column public_key text not null
        default ('pk_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''))
        constraint agent_web_widget_config_public_key_key unique
        constraint agent_web_widget_config_public_key_check check (public_key ~ '^pk_[0-9a-f]{32,128}$');
