"""Long-form transcription above the engine: windows at pauses (VAD), batched engine runs, word alignment,
Plus tag parsing, segments, writers. Entry point: `granite_asr.transcribe.pipeline.transcribe`."""
