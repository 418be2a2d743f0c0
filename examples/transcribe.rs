//! Transcribes WAV files with the offline whisper provider, printing the text
//! and the time taken: `cargo run --example transcribe -- a.wav [b.wav …]`.
//! Any sample rate; stereo files use the left channel.

use switchboard::agent_runtime::stt::{SpeechToText, WhisperStt};
use switchboard::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stt = WhisperStt::from_config(&config.stt)?;
    for path in std::env::args().skip(1) {
        let mut reader = hound::WavReader::open(&path)?;
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
        let mono: Vec<i16> = samples
            .chunks(spec.channels as usize)
            .map(|c| c[0])
            .collect();
        let pcm = switchboard::media::resample::resample_all(&mono, spec.sample_rate, 16_000)?;
        let t = stt
            .transcribe(&pcm, &switchboard::agent_runtime::stt::SttHints::default())
            .await?;
        println!(
            "{path}: {:?} ({} ms audio, {} ms)",
            t.text, t.audio_ms, t.elapsed_ms
        );
    }
    Ok(())
}
