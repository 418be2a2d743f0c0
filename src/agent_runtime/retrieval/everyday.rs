//! Everyday requests that no business's knowledge answers (the weather, a
//! taxi, a bank balance, a pizza): the reference a knowledge match must
//! beat before the agent reads it out. A sentence embedding scores every
//! question against every entry, and an off-topic question often finds a
//! weak neighbour (0.3–0.6 cosine: "Do you sell car insurance?" and a vet's
//! pet insurance). Out-of-scope detection with a background set: when the
//! question is clearly closer to one of these requests than to the match,
//! the match is not relevance. Requests close to an agent's own knowledge
//! (a garage's "My car won't start") are left out of that agent's set.
//!
//! The requests (`everyday_requests.txt`) were written from a list of
//! everyday topics, not from the evaluation sets; the margin and the
//! knowledge distance were chosen on the tuning split of
//! `tests/retrieval_paraphrase.rs`.

use super::super::embeddings::{Embedder, MAX_BATCH};
use super::super::provider_error::ProviderError;
use super::index::dot;

const REQUESTS: &str = include_str!("everyday_requests.txt");

/// A match whose cosine is below the nearest everyday request's less this
/// margin is taken for off-topic (the margin lets a weak but real match
/// through: callers also speak in everyday words).
pub const MARGIN: f32 = 0.12;
/// Requests at this cosine or more from any of an agent's chunks or FAQ
/// questions are that agent's business, not a reference against it.
pub const OWN_KNOWLEDGE_COSINE: f32 = 0.5;

/// The requests' vectors under one embedding model (the caller keeps the
/// model's name: `KnowledgeIndex::learn_everyday` checks it).
#[derive(Debug, Clone)]
pub struct Everyday {
    dims: usize,
    /// `len × dims`, L2-normalised rows.
    vectors: Vec<f32>,
}

/// The requests, one per line.
pub fn requests() -> Vec<String> {
    REQUESTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

impl Everyday {
    /// Embeds the requests with `embedder` (about a second on two cores).
    pub async fn embed(embedder: &dyn Embedder) -> Result<Everyday, ProviderError> {
        let texts = requests();
        let mut vectors = Vec::new();
        let mut dims = 0;
        for batch in texts.chunks(MAX_BATCH) {
            for v in embedder.embed(batch).await? {
                if dims == 0 {
                    dims = v.len();
                }
                if v.len() != dims || dims == 0 {
                    return Err(ProviderError::Engine(format!(
                        "embedder returned vectors of {} and {dims} dimensions",
                        v.len()
                    )));
                }
                vectors.extend_from_slice(&v);
            }
        }
        Ok(Everyday { dims, vectors })
    }

    /// From vectors already computed (`len × dims`).
    #[cfg(test)]
    fn from_vectors(dims: usize, vectors: Vec<f32>) -> Everyday {
        let dims = if dims > 0 && vectors.len().is_multiple_of(dims) {
            dims
        } else {
            0
        };
        Everyday {
            dims,
            vectors: if dims == 0 { Vec::new() } else { vectors },
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn len(&self) -> usize {
        self.vectors.len().checked_div(self.dims).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests that are not the business of knowledge whose vectors
    /// are `own` (`n × dims`, zero rows ignored): what an agent's matches
    /// are compared with.
    pub fn reference_for(&self, own: &[&[f32]]) -> Reference {
        if self.dims == 0 {
            return Reference::default();
        }
        let mut vectors = Vec::new();
        for request in self.vectors.chunks_exact(self.dims) {
            let closest = own
                .iter()
                .filter(|v| v.len() == self.dims)
                .map(|v| dot(request, v))
                .fold(f32::MIN, f32::max);
            if closest < OWN_KNOWLEDGE_COSINE {
                vectors.extend_from_slice(request);
            }
        }
        Reference {
            dims: self.dims,
            vectors,
        }
    }
}

/// One agent's reference requests.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    dims: usize,
    vectors: Vec<f32>,
}

impl Reference {
    pub fn len(&self) -> usize {
        self.vectors.len().checked_div(self.dims).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cosine of the request nearest to `query` (normalised, of the
    /// same model), or `None` without requests.
    pub fn nearest(&self, query: &[f32]) -> Option<f32> {
        if self.dims == 0 || query.len() != self.dims || self.vectors.is_empty() {
            return None;
        }
        self.vectors
            .chunks_exact(self.dims)
            .map(|r| dot(r, query))
            .reduce(f32::max)
    }

    /// Whether a match of cosine `matched` is beaten by an everyday request
    /// nearest at `nearest`.
    pub fn beats(nearest: Option<f32>, matched: Option<f32>) -> bool {
        match (nearest, matched) {
            (Some(n), Some(m)) => m < n - MARGIN,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_requests_are_many_and_distinct() {
        let r = requests();
        assert!(r.len() >= 100, "{}", r.len());
        let set: std::collections::HashSet<_> = r.iter().collect();
        assert_eq!(set.len(), r.len(), "a request is listed twice");
    }

    #[test]
    fn requests_close_to_the_agents_knowledge_are_left_out() {
        let weather = unit(&[1.0, 0.0, 0.0]);
        let taxi = unit(&[0.0, 1.0, 0.0]);
        let everyday = Everyday::from_vectors(3, [weather.clone(), taxi.clone()].concat());
        // The agent's knowledge is about taxis.
        let own = unit(&[0.1, 1.0, 0.0]);
        let reference = everyday.reference_for(&[&own]);
        assert_eq!(reference.len(), 1);
        assert_eq!(reference.nearest(&weather), Some(1.0));
        assert!(reference.nearest(&taxi).unwrap() < 0.01);
        // Another model's length is never compared.
        assert_eq!(reference.nearest(&[1.0, 0.0]), None);
    }

    #[test]
    fn a_match_loses_only_by_more_than_the_margin() {
        assert!(Reference::beats(Some(0.6), Some(0.4)));
        assert!(!Reference::beats(Some(0.6), Some(0.5)));
        assert!(!Reference::beats(None, Some(0.1)));
        assert!(!Reference::beats(Some(0.9), None));
    }

    #[test]
    fn bad_shapes_give_an_empty_set() {
        let e = Everyday::from_vectors(3, vec![1.0; 4]);
        assert!(e.is_empty());
        assert!(e.reference_for(&[]).is_empty());
    }
}
