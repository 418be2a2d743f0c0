//! Judging one question's call from the node's own records and the caller's
//! ears, and summing the figures per knowledge base: accuracy by meaning
//! (which entry's key words the agent's answer carries), word error rates,
//! and latency percentiles at the caller beside the inside figures.

use std::time::Duration;

use serde_json::{json, Value};

use super::common::caller_voice::{key_word_recall, wer};
use super::node::{KnowledgeBase, Question};

/// A message: role, content, and its STT, first-token and first-audio times.
type MessageRow = (String, String, Option<i32>, Option<i32>, Option<i32>);

/// What the node wrote about one call.
#[derive(Debug, Default)]
pub struct Records {
    pub user: Vec<String>,
    pub assistant: Vec<String>,
    /// The first answered turn of `call_logs.latency.turns`.
    pub latency_turn: Value,
    /// The call's receive-side jitter buffer (`call_logs.latency.media`):
    /// its deepest and final target delay, which the caller's audio waited
    /// before the node heard it (a delay the inside figures do not see).
    pub jitter: Value,
    pub stt_ms: Option<i32>,
    pub llm_first_token_ms: Option<i32>,
    pub tts_first_byte_ms: Option<i32>,
}

/// Waits (at most 15 s) until the call `sip_call_id` has its figures
/// written and its session ended, then reads its conversation.
pub async fn records(db: &sqlx::PgPool, sip_call_id: &str) -> Records {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let row: Option<(uuid::Uuid, Value)> = loop {
        let row = sqlx::query_as(
            "select c.session_id, c.latency from call_logs c
             join agent_sessions s on s.id = c.session_id
             where c.sip_call_id = $1 and c.latency is not null and s.ended_at is not null",
        )
        .bind(sip_call_id)
        .fetch_optional(db)
        .await
        .unwrap_or(None);
        if row.is_some() || tokio::time::Instant::now() >= deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some((session, latency)) = row else {
        return Records::default();
    };
    let messages: Vec<MessageRow> = sqlx::query_as(
        "select role, content, stt_ms, llm_first_token_ms, tts_first_byte_ms from messages
         where session_id = $1 order by created_at",
    )
    .bind(session)
    .fetch_all(db)
    .await
    .unwrap_or_default();
    let mut out = Records {
        latency_turn: latency["turns"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["voice_to_voice_ms"].is_u64()).cloned())
            .unwrap_or(Value::Null),
        jitter: json!({
            "max_depth_ms": latency["media"]["jitter_max_depth_ms"],
            "target_ms": latency["media"]["jitter_target_ms"],
            "jitter_ms": latency["media"]["jitter_ms"],
        }),
        ..Records::default()
    };
    // The greeting comes before the caller's first words; answers after.
    for (role, content, stt, llm, tts) in messages {
        match role.as_str() {
            "user" => {
                out.stt_ms = out.stt_ms.or(stt);
                out.user.push(content);
            }
            "assistant" if !out.user.is_empty() => {
                out.llm_first_token_ms = out.llm_first_token_ms.or(llm);
                out.tts_first_byte_ms = out.tts_first_byte_ms.or(tts);
                out.assistant.push(content);
            }
            _ => {}
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Right,
    /// The entry (or "fallback", or "unknown") the answer was judged to be.
    Wrong(String),
    NoAnswer,
}

#[derive(Debug)]
pub struct Turn {
    pub kb: String,
    pub heldout: bool,
    pub said: String,
    pub expected: String,
    pub heard_by_agent: String,
    pub answer: String,
    pub heard_by_caller: String,
    pub outcome: Outcome,
    pub heard_wer: (usize, usize),
    pub intelligibility_wer: (usize, usize),
    pub caller_v2v_ms: Option<f64>,
    pub records: Records,
}

/// Which entry an answer is, by meaning: the FAQ answer (or the fallback
/// line) whose key words it carries most; under half of them is "unknown".
fn classify(kb: &KnowledgeBase, answer: &str) -> String {
    let mut best = ("unknown".to_string(), 0.5);
    let candidates = kb
        .faqs
        .iter()
        .map(|f| (f.id.as_str(), f.answer.as_str()))
        .chain([("fallback", kb.fallback.as_str())]);
    for (id, text) in candidates {
        let recall = key_word_recall(text, answer);
        if recall > best.1 {
            best = (id.to_string(), recall);
        }
    }
    best.0
}

pub fn judge(
    kb: &KnowledgeBase,
    q: &Question,
    records: Records,
    heard_by_caller: String,
    caller_v2v_ms: Option<f64>,
) -> Turn {
    let heard_by_agent = records.user.join(" ");
    let answer = records.assistant.join(" ");
    let outcome = if answer.trim().is_empty() {
        Outcome::NoAnswer
    } else {
        let got = classify(kb, &answer);
        if got == q.expected {
            Outcome::Right
        } else {
            Outcome::Wrong(got)
        }
    };
    Turn {
        kb: kb.name.clone(),
        heldout: kb.heldout,
        said: q.said.clone(),
        expected: q.expected.clone(),
        heard_wer: wer(&q.said, &heard_by_agent),
        intelligibility_wer: if answer.is_empty() {
            (0, 0)
        } else {
            wer(&answer, &heard_by_caller)
        },
        heard_by_agent,
        answer,
        heard_by_caller,
        outcome,
        caller_v2v_ms,
        records,
    }
}

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    json!({ "p50": pick(0.5), "p95": pick(0.95), "n": v.len() })
}

fn ratio((errors, words): (usize, usize)) -> Value {
    if words == 0 {
        Value::Null
    } else {
        json!(((errors as f64 / words as f64) * 1000.0).round() / 1000.0)
    }
}

fn summary(turns: &[&Turn]) -> Value {
    let sum = |f: fn(&Turn) -> (usize, usize)| {
        turns
            .iter()
            .map(|t| f(t))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let right = turns.iter().filter(|t| t.outcome == Outcome::Right).count();
    let inside = |key: &str| -> Value {
        percentiles(
            turns
                .iter()
                .filter_map(|t| t.records.latency_turn[key].as_f64())
                .collect(),
        )
    };
    let column = |f: fn(&Records) -> Option<i32>| -> Value {
        percentiles(
            turns
                .iter()
                .filter_map(|t| f(&t.records).map(f64::from))
                .collect(),
        )
    };
    json!({
        "questions": turns.len(),
        "answer_accuracy": if turns.is_empty() { Value::Null } else {
            json!(((right as f64 / turns.len() as f64) * 1000.0).round() / 1000.0)
        },
        "right": right,
        "heard_wer": ratio(sum(|t| t.heard_wer)),
        "intelligibility_wer": ratio(sum(|t| t.intelligibility_wer)),
        "at_the_caller_ms": {
            "voice_to_voice": percentiles(turns.iter().filter_map(|t| t.caller_v2v_ms).collect()),
        },
        "inside_ms": {
            "voice_to_voice": inside("voice_to_voice_ms"),
            "respond_after": inside("respond_after_ms"),
            "stt": inside("stt_ms"),
            "retrieval": inside("retrieval_ms"),
            "llm_first_token": inside("llm_first_token_ms"),
            "tts_first_audio": inside("tts_first_audio_ms"),
            "messages_stt_ms": column(|r| r.stt_ms),
            "messages_llm_first_token_ms": column(|r| r.llm_first_token_ms),
            "messages_tts_first_byte_ms": column(|r| r.tts_first_byte_ms),
        },
    })
}

pub fn report(kbs: &[KnowledgeBase], turns: &[Turn]) -> Value {
    let mut per_kb = serde_json::Map::new();
    for kb in kbs {
        let group: Vec<&Turn> = turns.iter().filter(|t| t.kb == kb.name).collect();
        let mut s = summary(&group);
        s["heldout"] = json!(kb.heldout);
        per_kb.insert(kb.name.clone(), s);
    }
    let all: Vec<&Turn> = turns.iter().collect();
    let tuning: Vec<&Turn> = turns.iter().filter(|t| !t.heldout).collect();
    let heldout: Vec<&Turn> = turns.iter().filter(|t| t.heldout).collect();
    let details: Vec<Value> = turns
        .iter()
        .map(|t| {
            json!({
                "kb": t.kb, "said": t.said, "expected": t.expected,
                "outcome": match &t.outcome {
                    Outcome::Right => "right".to_string(),
                    Outcome::Wrong(got) => format!("wrong: {got}"),
                    Outcome::NoAnswer => "no answer".to_string(),
                },
                "heard_by_agent": t.heard_by_agent, "answer": t.answer,
                "heard_by_caller": t.heard_by_caller,
                "caller_voice_to_voice_ms": t.caller_v2v_ms,
                "inside_turn": t.records.latency_turn,
                "node_jitter_buffer": t.records.jitter,
            })
        })
        .collect();
    json!({
        "benchmark": "conversation",
        "path": "switchboard serve (release) in its own process; caller: this program's SIP/RTP peer \
                 (PCMU), Piper en_US-joe-medium voice, whisper base ears",
        "measured_at": chrono::Utc::now().to_rfc3339(),
        "goals": {
            "answer_accuracy_min": 0.95, "heard_wer_max": 0.05, "intelligibility_wer_max": 0.05,
            "at_the_caller_voice_to_voice_ms": { "p50_max": 400, "p95_max": 600 },
        },
        "overall": summary(&all),
        "tuning_kbs": summary(&tuning),
        "heldout": summary(&heldout),
        "per_kb": per_kb,
        "turns": details,
    })
}

/// A readable table of the report, goals beside the figures.
pub fn table(r: &Value) -> String {
    let pct = |v: &Value| {
        v.as_f64()
            .map_or("-".into(), |x| format!("{:.1} %", x * 100.0))
    };
    let ms = |v: &Value, p: &str| v[p].as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    let mut rows = vec![("overall".to_string(), &r["overall"])];
    rows.push(("tuning KBs".into(), &r["tuning_kbs"]));
    rows.push(("held-out KB".into(), &r["heldout"]));
    if let Some(m) = r["per_kb"].as_object() {
        for (k, v) in m {
            rows.push((format!("  {k}"), v));
        }
    }
    let mut out = format!(
        "{:<30} {:>4} {:>9} {:>9} {:>9} {:>17} {:>17} {:>13}\n",
        "", "n", "accuracy", "heard", "intellig.", "caller v2v", "inside v2v", "inside stt"
    );
    out.push_str(&format!(
        "{:<30} {:>4} {:>9} {:>9} {:>9} {:>17} {:>17} {:>13}\n",
        "", "", "", "WER", "WER", "p50 / p95 ms", "p50 / p95 ms", "p50 / p95"
    ));
    for (name, s) in rows {
        let c = &s["at_the_caller_ms"]["voice_to_voice"];
        let i = &s["inside_ms"]["voice_to_voice"];
        let t = &s["inside_ms"]["stt"];
        out.push_str(&format!(
            "{:<30} {:>4} {:>9} {:>9} {:>9} {:>17} {:>17} {:>13}\n",
            name,
            s["questions"],
            pct(&s["answer_accuracy"]),
            pct(&s["heard_wer"]),
            pct(&s["intelligibility_wer"]),
            format!("{} / {}", ms(c, "p50"), ms(c, "p95")),
            format!("{} / {}", ms(i, "p50"), ms(i, "p95")),
            format!("{} / {}", ms(t, "p50"), ms(t, "p95")),
        ));
    }
    out.push_str(&format!(
        "{:<30} {:>4} {:>9} {:>9} {:>9} {:>17}\n",
        "goal", "", "≥ 95 %", "≤ 5 %", "≤ 5 %", "400 / 600"
    ));
    out
}

/// One level of the concurrency run: `concurrency` callers at once,
/// `rounds` times.
pub struct Level {
    pub concurrency: usize,
    pub rounds: usize,
    pub turns: Vec<Turn>,
    pub refused: Vec<super::common::sip_caller::Refused>,
}

impl Level {
    pub fn new(concurrency: usize, rounds: usize) -> Level {
        Level {
            concurrency,
            rounds,
            turns: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let turns: Vec<&Turn> = self.turns.iter().collect();
        let mut s = summary(&turns);
        let mut codes: Vec<u16> = self.refused.iter().map(|r| r.code).collect();
        codes.sort_unstable();
        s["concurrency"] = json!(self.concurrency);
        s["rounds"] = json!(self.rounds);
        s["calls"] = json!(self.turns.len() + self.refused.len());
        s["refused"] = json!({
            "count": self.refused.len(),
            "codes": codes,
            "with_retry_after": self.refused.iter().filter(|r| r.retry_after.is_some()).count(),
        });
        s["unanswered"] = json!(self
            .turns
            .iter()
            .filter(|t| t.outcome == Outcome::NoAnswer)
            .count());
        s
    }
}

/// One printed line per level.
pub fn level_line(l: &Level) -> String {
    let s = l.to_json();
    let ms = |v: &Value, p: &str| v[p].as_f64().map_or("-".into(), |x| format!("{x:.0}"));
    let c = &s["at_the_caller_ms"]["voice_to_voice"];
    let i = &s["inside_ms"]["voice_to_voice"];
    format!(
        "{:>3} callers × {} rounds: {} calls, {} refused, {} unanswered, {}/{} right; \
         at the caller p50 {} / p95 {} ms (inside {} / {} ms)",
        l.concurrency,
        l.rounds,
        s["calls"],
        s["refused"]["count"],
        s["unanswered"],
        s["right"],
        s["questions"],
        ms(c, "p50"),
        ms(c, "p95"),
        ms(i, "p50"),
        ms(i, "p95"),
    )
}

pub fn concurrency_report(levels: Vec<Level>) -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "benchmark": "conversation --concurrency",
        "path": "switchboard serve (release) in its own process; N SIP callers of this program at \
                 once (PCMU, Piper en_US-joe-medium voice), each asking one question per round; \
                 whisper base ears after each round",
        "measured_at": chrono::Utc::now().to_rfc3339(),
        "load_average_at_end": load.split_whitespace().take(3).collect::<Vec<_>>(),
        "goal": "≥ 30 conversing calls with p95 ≤ 1 s at the caller and no question unanswered; \
                 beyond capacity 503 with Retry-After",
        "levels": levels.iter().map(Level::to_json).collect::<Vec<_>>(),
    })
}
