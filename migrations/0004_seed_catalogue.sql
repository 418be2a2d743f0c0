-- The global catalogues: LLM models (list prices in USD per 1k tokens) and
-- pricing plans. Idempotent upserts keyed on (provider, model_id) and name.

-- Only one row may be the default: clear others first so the upsert below
-- never trips llm_models_one_default.
update llm_models set is_default = false
where is_default and not (provider = 'offline' and model_id = 'retrieval-answerer');

insert into llm_models (provider, name, model_id, context_window, input_cost_per_1k, output_cost_per_1k, is_default)
values
    ('offline',   'Offline retrieval answerer', 'retrieval-answerer',         4096,    0,        0,        true),
    ('openai',    'GPT-4o mini',                'gpt-4o-mini',                128000,  0.000150, 0.000600, false),
    ('openai',    'GPT-4o',                     'gpt-4o',                     128000,  0.002500, 0.010000, false),
    ('openai',    'GPT-4.1 mini',               'gpt-4.1-mini',               1047576, 0.000400, 0.001600, false),
    ('anthropic', 'Claude 3.5 Haiku',           'claude-3-5-haiku-20241022',  200000,  0.000800, 0.004000, false),
    ('anthropic', 'Claude Sonnet 4',            'claude-sonnet-4-20250514',   200000,  0.003000, 0.015000, false),
    ('groq',      'Llama 3.1 8B Instant',       'llama-3.1-8b-instant',       131072,  0.000050, 0.000080, false),
    ('groq',      'Llama 3.3 70B Versatile',    'llama-3.3-70b-versatile',    131072,  0.000590, 0.000790, false)
on conflict (provider, model_id) do update set
    name               = excluded.name,
    context_window     = excluded.context_window,
    input_cost_per_1k  = excluded.input_cost_per_1k,
    output_cost_per_1k = excluded.output_cost_per_1k,
    is_default         = excluded.is_default;

update pricing_plans set is_default = false where is_default and name <> 'Free';

insert into pricing_plans (name, stripe_price_id, price_monthly, price_yearly, conversation_limit, minute_limit, features, is_default)
values
    ('Free',       null,    0,   0,    100,   60,
     '{"agents": 1, "phone_numbers": 1, "recording": false, "support": "community"}', true),
    ('Starter',    null,   29,  290,  1000,  500,
     '{"agents": 3, "phone_numbers": 3, "recording": true, "support": "email"}', false),
    ('Pro',        null,   99,  990,  5000, 2500,
     '{"agents": 20, "phone_numbers": 20, "recording": true, "support": "priority"}', false),
    ('Enterprise', null, null, null,  null, null,
     '{"agents": null, "phone_numbers": null, "recording": true, "support": "dedicated", "sso": true}', false)
on conflict (name) do update set
    price_monthly      = excluded.price_monthly,
    price_yearly       = excluded.price_yearly,
    conversation_limit = excluded.conversation_limit,
    minute_limit       = excluded.minute_limit,
    features           = excluded.features,
    is_default         = excluded.is_default;
