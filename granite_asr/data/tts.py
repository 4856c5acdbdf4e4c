"""Offline TTS engines behind one interface: ``list_voices`` and ``synthesize``.

Every engine installed by ``scripts/setup_data.sh`` is wrapped by a small class. Command-line engines
(espeak-ng, mbrola, pico, flite, festival, open_jtalk) live here and run in a subprocess with a timeout, so
a crash (festival's diphone voices segfault under load) costs one utterance, not the run. The neural engines
(piper, kokoro) live in `tts_neural.py`.

``rate`` is a speed factor (1.0 = the engine's default, 1.2 = 20 % faster) and ``pitch`` a shift in
semitones; engines without a pitch control ignore it (augmentation can shift pitch afterwards).
Output is always float32 mono at 16 kHz.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
TIMEOUT_S = 60


class SynthesisError(RuntimeError):
    """One utterance could not be synthesised (crash, timeout, empty output); skip it."""


@dataclass(frozen=True)
class Voice:
    name: str  # unique, e.g. "espeak:en-us+m3"
    engine: str
    lang: str
    licence_ok_for_training: bool
    # Same speaker across engines/languages shares a family (flite slt == festival slt); splits hold out
    # whole families so "unseen voice" really is unseen.
    family: str = ""
    spec: str = ""  # engine-specific voice id (espeak voice, model path, style blend, ...)


def _run(cmd: list[str], *, stdin: str | None = None, timeout: float = TIMEOUT_S) -> bytes:
    try:
        p = subprocess.run(
            cmd, input=stdin.encode() if stdin is not None else None, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise SynthesisError(f"{cmd[0]} timed out") from e
    if p.returncode != 0:
        raise SynthesisError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-200:]}")
    return p.stdout


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists() or path.stat().st_size <= 44:
        raise SynthesisError(f"no audio written to {path.name}")
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


# --------------------------------------------------------------------------------------- espeak-ng family
ESPEAK_ACCENTS = {
    "en": [
        "en-us",
        "en-gb",
        "en-gb-scotland",
        "en-gb-x-rp",
        "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
        "en-029",
        "en-us-nyc",
    ],
    "fr": ["fr-fr", "fr-be", "fr-ch"],
    "de": ["de"],
    "es": ["es", "es-419"],
    "pt": ["pt", "pt-br"],
    "ja": ["ja"],
}
# Variants that make speech robotic or whispered beyond what real speakers do.
_ROBOTIC = ("robo", "Robot", "Demonic", "RicishayMax", "Tweaky", "whisper", "fast", "croak", "UniRobot")
MBROLA_LANG = {
    "us": "en",
    "en": "en",
    "fr": "fr",
    "ca": "fr",
    "de": "de",
    "es": "es",
    "mx": "es",
    "vz": "es",
    "br": "pt",
    "pt": "pt",
    "jp": "ja",
}


class Espeak:
    engine = "espeak"
    exe = "espeak-ng"

    def available(self) -> bool:
        return shutil.which(self.exe) is not None

    @functools.cache  # noqa: B019 - engines are module singletons
    def variants(self) -> tuple[str, ...]:
        out = _run([self.exe, "--voices=variant"]).decode().splitlines()[1:]
        names = [ln.split()[4].removeprefix("!v/") for ln in out if len(ln.split()) >= 5]
        return ("",) + tuple(sorted(n for n in names if not any(r in n for r in _ROBOTIC)))

    def voices(self, lang: str) -> list[Voice]:
        return [
            Voice(
                f"espeak:{acc}{'+' + v if v else ''}",
                "espeak",
                lang,
                True,
                f"espeak+{v or 'default'}",
                f"{acc}{'+' + v if v else ''}",
            )
            for acc in ESPEAK_ACCENTS.get(lang, [])
            for v in self.variants()
        ]

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        # -s is words per minute (default 175); -p 0..99 (default 50) moves F0 about 6 units per semitone.
        wpm = str(int(_clamp(175 * rate, 80, 450)))
        p = str(int(_clamp(50 + 6 * pitch, 0, 99)))
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "o.wav"
            _run([self.exe, "-v", voice.spec, "-s", wpm, "-p", p, "-w", str(out), "--stdin"], stdin=text)
            return _read_wav(out)


class Mbrola(Espeak):
    """mbrola diphone voices driven by espeak-ng. Non-commercial licence: validation only."""

    engine = "mbrola"

    def available(self) -> bool:
        return super().available() and Path("/usr/share/mbrola").is_dir()

    def voices(self, lang: str) -> list[Voice]:
        out = []
        for d in sorted(Path("/usr/share/mbrola").iterdir()):
            if (d / d.name).exists() and MBROLA_LANG.get(d.name[:2]) == lang:
                out.append(
                    Voice(f"mbrola:{d.name}", "mbrola", lang, False, f"mbrola:{d.name}", f"mb-{d.name}")
                )
        return out


class Pico(Espeak):
    """SVOX pico. Its lingware is non-free: validation only."""

    engine = "pico"
    exe = "pico2wave"
    LANGS = {"en": ["en-US", "en-GB"], "de": ["de-DE"], "es": ["es-ES"], "fr": ["fr-FR"]}

    def voices(self, lang: str) -> list[Voice]:
        return [
            Voice(f"pico:{code}", "pico", lang, False, f"pico:{code}", code)
            for code in self.LANGS.get(lang, [])
        ]

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        # pico2wave has no flags for speed/pitch, but its SSML-like markup accepts percentage levels.
        marked = f"<speed level='{int(100 * rate)}'><pitch level='{int(100 * 2 ** (pitch / 12))}'>{text}</pitch></speed>"
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "o.wav"
            _run([self.exe, "-l", voice.spec, "-w", str(out), marked])
            return _read_wav(out)


# ------------------------------------------------------------------------------------ flite and festival
class Flite(Espeak):
    engine = "flite"
    exe = "flite"
    FAMILY = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}

    def voices(self, lang: str) -> list[Voice]:
        if lang != "en":
            return []
        return [Voice(f"flite:{v}", "flite", "en", True, fam, v) for v, fam in self.FAMILY.items()]

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory() as d:
            src, out = Path(d) / "in.txt", Path(d) / "o.wav"
            src.write_text(text + "\n", encoding="utf-8")
            _run(
                [
                    self.exe,
                    "-voice",
                    voice.spec,
                    "--setf",
                    f"duration_stretch={1 / rate:.3f}",
                    "-o",
                    str(out),
                    "-f",
                    str(src),
                ]
            )
            return _read_wav(out)


class Festival(Espeak):
    engine = "festival"
    exe = "text2wave"
    VOICES = {
        "kal_diphone": ("kal", "english/kal_diphone"),
        "ked_diphone": ("ked", "english/ked_diphone"),
        "cmu_us_slt_arctic_hts": ("slt", "us/cmu_us_slt_arctic_hts"),
    }

    def voices(self, lang: str) -> list[Voice]:
        if lang != "en":
            return []
        root = Path("/usr/share/festival/voices")
        return [
            Voice(f"festival:{v}", "festival", "en", True, fam, v)
            for v, (fam, sub) in self.VOICES.items()
            if (root / sub).is_dir()
        ]

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory() as d:
            src, out = Path(d) / "in.txt", Path(d) / "o.wav"
            src.write_text(text + "\n", encoding="utf-8")
            # diphone voices obey Duration_Stretch; the HTS voice takes hts_engine's own -r/-fm flags
            tweak = (
                f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.3f}) '
                f'(list "-fm" {pitch:.2f}))))'
                if "hts" in voice.spec
                else f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})"
            )
            _run([self.exe, "-eval", f"(voice_{voice.spec})", "-eval", tweak, "-o", str(out), str(src)])
            return _read_wav(out)


# ------------------------------------------------------------------------------------------- Open JTalk
OJT_DIC = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")
OJT_M001 = Path("/usr/share/hts-voice/nitech-jp-atr503-m001/nitech_jp_atr503_m001.htsvoice")
# -a is the all-pass (frequency warping) constant: shifting it changes the apparent vocal tract, which turns
# each HTS voice into a few pseudo-speakers.
OJT_ALPHAS = (0.50, 0.55, 0.60)


def _mei_path() -> Path | None:
    try:
        import pyopenjtalk
    except ImportError:
        return None
    p = Path(pyopenjtalk.__file__).parent / "htsvoice" / "mei_normal.htsvoice"
    return p if p.exists() else None


class OpenJTalk(Espeak):
    engine = "open_jtalk"
    exe = "open_jtalk"

    def available(self) -> bool:
        return super().available() and OJT_DIC.is_dir()

    def voices(self, lang: str) -> list[Voice]:
        if lang != "ja":
            return []
        bases = [("m001", OJT_M001 if OJT_M001.exists() else None), ("mei", _mei_path())]
        return [
            Voice(f"open_jtalk:{n}@a{a:.2f}", "open_jtalk", "ja", True, f"open_jtalk:{n}", f"{p}|{a}")
            for n, p in bases
            if p
            for a in OJT_ALPHAS
        ]

    def synth(self, voice: Voice, text: str, rate: float, pitch: float, seed: int) -> tuple[np.ndarray, int]:
        path, alpha = voice.spec.split("|")
        with tempfile.TemporaryDirectory() as d:
            src, out = Path(d) / "in.txt", Path(d) / "o.wav"
            src.write_text(text + "\n", encoding="utf-8")
            _run(
                [
                    self.exe,
                    "-x",
                    str(OJT_DIC),
                    "-m",
                    path,
                    "-ow",
                    str(out),
                    "-r",
                    f"{rate:.3f}",
                    "-fm",
                    f"{pitch:.2f}",
                    "-a",
                    alpha,
                    str(src),
                ]
            )
            return _read_wav(out)


# ---------------------------------------------------------------------------------------------- registry
@functools.cache
def engines() -> dict:
    """Engine name → engine. The neural engines live in `tts_neural.py`, which imports this module's
    `Voice`/`SynthesisError`, hence the import on first use rather than at the top."""
    from .tts_neural import Kokoro, Piper

    return {
        e.engine: e for e in (Espeak(), Flite(), Festival(), OpenJTalk(), Piper(), Kokoro(), Mbrola(), Pico())
    }


@functools.cache
def _installed(engine: str) -> bool:
    return engines()[engine].available()


def list_voices(lang: str, *, for_training: bool) -> list[Voice]:
    """Installed voices for ``lang``. ``for_training=True`` drops mbrola/pico (licences forbid shipping
    a model trained on them); ``False`` returns every voice, the validation-only ones included."""
    out = []
    for name, eng in engines().items():
        if _installed(name):
            out += [v for v in eng.voices(lang) if v.licence_ok_for_training or not for_training]
    return out


def synthesize(
    voice: Voice, text: str, *, rate: float = 1.0, pitch: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; returns (float32 mono samples, 16000). Raises SynthesisError."""
    try:
        x, sr = engines()[voice.engine].synth(voice, text, rate, pitch, seed)
    except SynthesisError:
        raise
    except Exception as e:  # an engine bug must cost one utterance, never the corpus run
        raise SynthesisError(f"{voice.name}: {type(e).__name__}: {e}") from e
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE)
    x = np.asarray(x, np.float32)
    if x.size == 0 or not np.isfinite(x).all() or np.abs(x).max() < 1e-4:
        raise SynthesisError(f"{voice.name}: silent or invalid audio")
    return x, SAMPLE_RATE
