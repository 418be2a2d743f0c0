//! What a starting node still does before it serves calls at full speed:
//! the recognizer's warm-up, the everyday reference and the knowledge
//! (loaded, and embedded where vectors are missing). `GET /readyz` answers
//! 503 until every stage is done, so a balancer or a script sends calls
//! only to a node that answers them in time.

use tokio::sync::watch;

/// A start-up stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    SpeechToText,
    Knowledge,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::SpeechToText => "speech_to_text",
            Stage::Knowledge => "knowledge",
        }
    }
}

/// The stages still running.
pub struct WarmUp {
    pending: watch::Sender<Vec<Stage>>,
}

impl WarmUp {
    pub fn new(stages: &[Stage]) -> WarmUp {
        WarmUp {
            pending: watch::Sender::new(stages.to_vec()),
        }
    }

    /// `stage` finished (well or not: a failed stage is logged where it
    /// failed and the node serves without it).
    pub fn finished(&self, stage: Stage) {
        self.pending.send_modify(|p| p.retain(|s| *s != stage));
    }

    /// The stages still running, by name.
    pub fn pending(&self) -> Vec<&'static str> {
        self.pending.borrow().iter().map(|s| s.as_str()).collect()
    }

    /// Resolves once every stage has finished.
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|p| p.is_empty()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn ready_once_every_stage_has_finished() {
        let warm = std::sync::Arc::new(WarmUp::new(&[Stage::SpeechToText, Stage::Knowledge]));
        assert_eq!(warm.pending(), ["speech_to_text", "knowledge"]);
        warm.finished(Stage::Knowledge);
        assert_eq!(warm.pending(), ["speech_to_text"]);
        let waiting = tokio::spawn({
            let warm = warm.clone();
            async move { warm.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        warm.finished(Stage::SpeechToText);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("ready")
            .expect("task");
        assert!(warm.pending().is_empty());
        // Nothing to do: ready at once.
        WarmUp::new(&[]).wait().await;
    }
}
