"""Long-form mechanics above the engine: Plus tags, VAD, windows, the pipeline, `model.transcribe`.

Most pipeline tests use `BurstEngine`, a stand-in engine whose "speech" is tone bursts: a burst at
400 + 100·k Hz is the word WORDS[k], and its char posteriors put the word's letters on the burst's
frames. Every word's true time is known, so windowing, alignment and absolute times are checked exactly.
The tiny random checkpoints then check the same path end to end with the real engine.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch

import granite_asr
from granite_asr import char_vocab
from granite_asr.audio.io import NonFiniteAudioWarning
from granite_asr.options import TranscribeOptions
from granite_asr.results import Transcription
from granite_asr.transcribe import assemble, pipeline, plus_tags, vad
from granite_asr.transcribe.pipeline import make_options, transcribe
from granite_asr.transcribe.speakers import SpeakerTracker
from granite_asr.transcribe.windows import plan_windows, windows_for

from .helpers_model import build_tiny

SR = 16000
FRAME_SECONDS = 0.02
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack"]


# ------------------------------------------------------------------------------------------ helpers


def tiny_model(name: str = "tiny", seed: int = 0):
    return build_tiny(name, seed, plain_multipliers=False)


def burst_audio(plan: list[tuple[float, int]], total: float, seed: int = 0) -> np.ndarray:
    """[(start seconds, word index)] → 0.4 s tone bursts over faint noise (-70 dBFS)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(total * SR)) * 3e-4).astype(np.float32)
    t = np.arange(int(0.4 * SR)) / SR
    for start, k in plan:
        i = int(start * SR)
        x[i : i + len(t)] += 0.3 * np.sin(2 * np.pi * (400 + 100 * k) * t) * np.hanning(len(t))
    return x


@dataclass(frozen=True)
class FakeResult:
    tokens: tuple
    token_logprobs: tuple
    text: str
    mode_used: str
    char_logits: torch.Tensor
    encoder_frames: int
    frame_seconds: float
    draft_tokens: tuple = ()


class BurstEngine:
    """Engine stand-in: tone bursts → words, with char posteriors on the burst frames."""

    def __init__(self, variant="ar", tags=None):
        self.variant = variant
        self.tags = tags  # None, "speakers" (even k = one voice, odd k = another) or "times"
        self.calls: list[int] = []

    def check(self, options):
        options.validate(self.variant)

    def run(self, audios, options, on_batch=None):
        self.calls.append(len(audios))
        out = [self._one(np.asarray(a)) for a in audios]
        if on_batch:
            on_batch(len(out), len(out))
        return out

    def _one(self, audio):
        frames = len(audio) // 320
        db = vad.frame_energy_db(audio)[:frames]
        words, logits = [], torch.full((frames, char_vocab.SIZE), -12.0)
        logits[:, char_vocab.BLANK] = 0.0
        for a, b in vad._runs(db > -40):
            seg = audio[a * 320 : b * 320]
            freq = np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg))))) * SR / len(seg)
            k = int(round((freq - 400) / 100))
            words.append((k, a, b))
            for i, ch in enumerate(WORDS[k]):  # letters on every other frame from the burst's start
                logits[a + 2 * i, char_vocab.char_to_id(ch)] = 5.0
        text = self._text(words)
        return FakeResult((1, 2), (-0.5, -0.25), text, "ar", logits.log_softmax(-1), frames, FRAME_SECONDS)

    def _text(self, words):
        if self.tags == "times":  # Plus timestamp tags: end times in centiseconds mod 1000 (SPEC §7.3)
            return " ".join(f"{WORDS[k]} [T:{round((b * 320 / SR) * 100) % 1000}]" for k, _, b in words)
        if self.tags == "speakers":
            parts, local, last = [], {}, None
            for k, _, _ in words:
                voice = k % 2
                local.setdefault(voice, len(local) + 1)
                if voice != last:
                    parts.append(f"[Speaker {local[voice]}]:")
                parts.append(WORDS[k])
                last = voice
            return " ".join(parts)
        return " ".join(WORDS[k] + ("." if k % 3 == 2 else "") for k, _, _ in words)


# ------------------------------------------------------------------------------------------ Plus tags


def test_plus_timestamp_tags_spec_example():
    words = plus_tags.parse_timed_words("_ [T:30] and [T:57] so [T:95] my [T:125] fellow [T:160]", offset=2.0)
    assert [w.word for w in words] == ["and", "so", "my", "fellow"]
    assert [(round(w.start, 2), round(w.end, 2)) for w in words] == [
        (2.30, 2.57),
        (2.57, 2.95),
        (2.95, 3.25),
        (3.25, 3.60),
    ]


def test_plus_timestamp_rollover_across_20_seconds():
    # true ends 4.0, 9.5, 12.0, 19.9, 21.0, 25.0 s → tags 400, 950, 200, 990, 100, 500
    text = "a [T:400] b [T:950] _ [T:980] c [T:200] d [T:990] e [T:100] f [T:500] g"
    words = plus_tags.parse_timed_words(text)
    assert [w.word for w in words] == list("abcdefg")
    ends = [round(w.end, 2) for w in words]
    assert ends == [4.0, 9.5, 12.0, 19.9, 21.0, 25.0, 25.0]  # g: untagged, zero length at the end
    starts = [round(w.start, 2) for w in words]
    assert starts == [0.0, 4.0, 9.8, 12.0, 19.9, 21.0, 25.0]  # c starts after the silence "_"


def test_plus_speaker_turns():
    text = "hi there [Speaker 1]: Hello how are you [Speaker 2] I'm fine [Speaker  2]: thanks [Speaker 1]:"
    turns = plus_tags.parse_speaker_turns(text)
    assert turns == [
        plus_tags.SpeakerTurn(None, "hi there"),
        plus_tags.SpeakerTurn("1", "Hello how are you"),
        plus_tags.SpeakerTurn("2", "I'm fine thanks"),
    ]
    assert plus_tags.strip_tags("[Speaker 1]: a [T:10] _ [T:20] b [T:30]") == "a b"


@pytest.mark.parametrize("cut", ["[T:3", "[T:", "[T", "[ T: 12 ", "[", "[Speaker 2", "[Spea", "[Speaker"])
def test_plus_tag_cut_off_at_the_token_limit_is_dropped(cut):
    text = f"[Speaker 1]: a [T:10] b [T:20] c {cut}"
    assert plus_tags.strip_tags(text) == "a b c"
    assert [w.word for w in plus_tags.parse_timed_words(text)] == ["a", "b", "c"]
    assert plus_tags.parse_speaker_turns(text) == [plus_tags.SpeakerTurn("1", "a [T:10] b [T:20] c")]


def test_unclosed_bracket_that_is_not_a_tag_stays_text():
    assert plus_tags.strip_tags("a [T:10] b [laughs") == "a b [laughs"
    assert plus_tags.drop_unfinished_tag("x [Speaker 1]: y") == "x [Speaker 1]: y"


# ------------------------------------------------------------------------------------------ VAD, windows


def test_windows_bounded_disjoint_and_cover_speech():
    rng = np.random.default_rng(1)
    audio = np.zeros(SR * 200, dtype=np.float32)
    regions, t = [], 0
    while t < len(audio) - SR:
        n = int(rng.uniform(0.2, 25) * SR)
        gap = int(rng.uniform(0.05, 3) * SR)
        regions.append((t, min(t + n, len(audio))))
        audio[t : t + n] = rng.standard_normal(min(n, len(audio) - t)) * 0.1
        t += n + gap
    wins = plan_windows(audio, regions, max_seconds=10.0)
    assert all(w.num_samples <= 10 * SR for w in wins)
    assert all(a.end <= b.start for a, b in zip(wins, wins[1:], strict=False))
    covered = np.zeros(len(audio), dtype=bool)
    for w in wins:
        covered[w.start : w.end] = True
    assert all(covered[a:b].all() for a, b in regions)


def test_long_speech_is_cut_at_the_quietest_point():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(SR * 40) * 0.1).astype(np.float32)
    audio[int(8.5 * SR) : int(8.6 * SR)] *= 0.01  # a short dip inside continuous "speech"
    wins = plan_windows(audio, [(0, len(audio))], max_seconds=10.0)
    assert abs(wins[0].end / SR - 8.55) < 0.06
    assert wins[0].end == wins[1].start  # cut windows share their boundary: nothing lost or doubled


def test_silence_gives_no_windows():
    for use_vad in (True, False):
        assert windows_for(np.zeros(SR * 5, np.float32), max_seconds=30, vad=use_vad) == []


def test_silero_loads_offline_and_keeps_torch_threads():
    # silero_vad sets torch's thread count to 1 when first imported; a fresh interpreter shows it is undone
    code = (
        "import torch; torch.set_num_threads(3); from granite_asr.transcribe import vad; "
        "assert vad.silero_available(); print(torch.get_num_threads())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "3", proc.stderr
    noise = (np.random.default_rng(0).standard_normal(SR * 3) * 0.1).astype(np.float32)
    assert vad.speech_regions(noise, vad=True) == []  # noise is not speech
    assert vad.speech_regions(noise, vad=False) == [(0, len(noise))]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_silero_finds_synthetic_speech(tmp_path):
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello world, this is a test"], check=True)
    from granite_asr.audio.io import load_audio

    speech = load_audio(wav)
    audio = np.concatenate([np.zeros(SR * 2, np.float32), speech, np.zeros(SR * 2, np.float32)])
    regions = vad.speech_regions(audio)
    assert regions and regions[0][0] >= SR * 1.5 and regions[-1][1] <= SR * 2 + len(speech) + SR // 2


# ------------------------------------------------------------------------------------------ pipeline


def test_long_input_words_exact_once_with_absolute_times():
    rng = np.random.default_rng(0)
    plan, t = [], 0.5
    for _ in range(60):
        plan.append((round(t, 2), int(rng.integers(len(WORDS)))))
        t += float(rng.uniform(0.6, 2.5))
    audio = burst_audio(plan, total=t + 1)
    engine = BurstEngine()
    res = transcribe(engine, audio, vad=False, chunk_seconds=8, word_timestamps=True, progress=False)
    assert isinstance(res, Transcription) and res.error is None
    assert [w.word.strip(" .") for w in res.words] == [WORDS[k] for _, k in plan]  # none lost or repeated
    for w, (start, _) in zip(res.words, plan, strict=True):
        assert start - 0.03 <= w.start <= start + 0.1 and w.end <= start + 0.45
        assert w.probability > 0.9
    segs = res.segments
    assert all(s.end - s.start <= assemble.MAX_SEGMENT_SECONDS for s in segs)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segs, segs[1:], strict=False))
    assert res.text == " ".join(s.text for s in segs)
    assert res.duration == pytest.approx(t + 1, abs=1e-3)


def test_segments_split_at_sentence_ends_and_pauses():
    plan = [(0.5, 0), (1.2, 1), (1.9, 2), (2.6, 3), (5.0, 4), (5.7, 5)]  # "two." ends a sentence
    res = transcribe(BurstEngine(), burst_audio(plan, 8.0), vad=False, progress=False)
    assert [s.text for s in res.segments] == ["zero one two.", "three", "four five."]
    assert res.segments[0].words == ()  # words only with word_timestamps (Whisper's convention)
    assert res.segments[0].start == pytest.approx(0.5, abs=0.03)


def test_plus_time_tags_give_word_times():
    plan = [(0.5, 1), (4.2, 2), (9.0, 3), (11.3, 4), (17.0, 5), (23.0, 6)]  # two 10 s rollovers
    res = transcribe(
        BurstEngine("plus", tags="times"),
        burst_audio(plan, 26.0),
        vad=False,
        chunk_seconds=30,
        word_timestamps=True,
        progress=False,
    )
    assert [w.word.strip() for w in res.words] == ["one", "two", "three", "four", "five", "six"]
    ends = [w.end for w in res.words]
    assert ends == pytest.approx([s + 0.4 for s, _ in plan], abs=0.03)


def test_plus_speakers_become_segments_with_file_wide_labels():
    plan = [(0.5, 1), (1.2, 3), (2.5, 2), (3.2, 4), (12.0, 6), (12.8, 5), (13.6, 7)]
    res = transcribe(
        BurstEngine("plus", tags="speakers"),
        burst_audio(plan, 16.0),
        vad=False,
        chunk_seconds=10,
        speakers=True,
        word_timestamps=True,
        progress=False,
    )
    assert [s.text for s in res.segments] == ["one three", "two four", "six", "five seven"]
    assert all(s.speaker and s.speaker.startswith("Speaker ") for s in res.segments)
    assert res.segments[0].speaker == "Speaker 1" and res.segments[1].speaker != "Speaker 1"
    assert all(w.speaker == s.speaker for s in res.segments for w in s.words)
    assert "speaker" in res.to_dict()["segments"][0]


def _buzz(f0: float, tilt: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h**tilt for h in range(1, int(7000 / f0)))
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def test_speaker_tracker_keeps_labels_across_windows():
    a, b = _buzz(110, 2.0), _buzz(230, 0.3)
    tracker = SpeakerTracker()
    audio1 = np.concatenate([a, b])  # window 1: A speaks first
    assert tracker.assign(audio1, [("1", 0.0, 2.0), ("2", 2.0, 4.0)]) == {"1": "Speaker 1", "2": "Speaker 2"}
    audio2 = np.concatenate([b, a])  # window 2: B speaks first, so the model calls B "Speaker 1"
    assert tracker.assign(audio2, [("1", 0.0, 2.0), ("2", 2.0, 4.0)]) == {"1": "Speaker 2", "2": "Speaker 1"}
    third = tracker.assign(np.concatenate([a, _buzz(400, -0.5)]), [("1", 0.0, 2.0), ("2", 2.0, 4.0)])
    assert third["1"] == "Speaker 1" and third["2"] == "Speaker 3"  # a new voice gets a new number


def test_list_in_list_out_errors_and_silence(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio at all" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    speech = burst_audio([(0.5, 1), (1.5, 2)], 3.0)
    engine = BurstEngine()
    out = transcribe(
        engine,
        [speech, str(bad), np.zeros(SR * 5, np.float32), empty, (speech[::2], 8000)],
        vad=False,
        progress=False,
    )
    assert isinstance(out, list) and len(out) == 5
    assert out[0].text == "one two." and out[4].text == "one two."
    assert out[1].error.startswith(str(bad)) and "not an audio file" in out[1].error
    assert out[2].ok and out[2].text == "" and out[2].segments == ()
    assert "empty" in out[3].error
    json.dumps([r.to_dict() for r in out])


def test_impossible_task_fails_before_any_compute():
    engine = BurstEngine("nar")
    with pytest.raises(ValueError, match="translat"):
        transcribe(engine, ["/does/not/exist.wav"], task="translate", progress=False)
    with pytest.raises(ValueError, match="Japanese"):
        transcribe(engine, "/does/not/exist.wav", language="ja", progress=False)
    assert engine.calls == []


def test_groups_bound_memory():
    audio = burst_audio([(float(s), 1) for s in range(1, 590, 3)], 600.0)
    engine = BurstEngine()
    res = transcribe(engine, [audio, audio], vad=False, chunk_seconds=5, progress=False)
    assert max(engine.calls) <= pipeline.GROUP_WINDOWS and sum(engine.calls) > pipeline.GROUP_WINDOWS
    assert len(res[0].words) == 0 and res[0].text.count("one") == res[1].text.count("one") == 197


def test_make_options():
    opts = make_options(beam_size=3, mode="ar", keywords="IBM", word_timestamps=True)
    assert opts.decode.beam_size == 3 and opts.decode.mode == "ar" and opts.keywords == ("IBM",)
    assert make_options(TranscribeOptions(language="fr"), chunk_seconds=5).language == "fr"
    with pytest.raises(TypeError, match="bogus"):
        make_options(bogus=1)


# ------------------------------------------------------------------------------------------ real engine


@pytest.mark.parametrize("name", ["tiny", "tiny-plus", "tiny-nar"])
def test_model_transcribe_tiny(name):
    model = tiny_model(name)
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(SR * 21)).astype(np.float32)
    long[SR * 9 : SR * 10] = 0
    clips = [long, (0.1 * rng.standard_normal(SR * 2)).astype(np.float32), np.zeros(SR, np.float32)]
    kw = {"vad": False, "chunk_seconds": 8, "max_new_tokens": 6, "progress": False, "word_timestamps": True}
    if name == "tiny-plus":  # the random Plus decoder only repeats <|end_of_role|> (→ ""): use its char head
        assert all(r.ok for r in model.transcribe(clips, **kw))
        kw["mode"] = "ctc"
    many = model.transcribe(clips, **kw)
    assert [type(r) for r in many] == [Transcription] * 3 and many[2].text == ""
    assert len({round(s.start) for s in many[0].segments}) >= 2  # the 21 s clip became several windows
    for s in many[0].segments:
        assert 0 <= s.start <= s.end <= 21.0
        assert all(s.start <= w.start <= w.end <= s.end + 1e-6 for w in s.words)
    one = model.transcribe(clips[1], **kw)
    assert one.text == many[1].text  # batched == alone
    json.dumps(one.to_dict())


def test_bad_inputs_on_a_real_engine(tmp_path):
    model = tiny_model("tiny")
    rng = np.random.default_rng(0)
    files = {}
    for rate in (8000, 44100, 48000):
        files[f"r{rate}"] = tmp_path / f"r{rate}.wav"
        sf.write(files[f"r{rate}"], (0.1 * rng.standard_normal(rate)).astype(np.float32), rate)
    files["six"] = tmp_path / "six.wav"
    sf.write(files["six"], (0.1 * rng.standard_normal((SR, 6))).astype(np.float32), SR)
    files["short"] = tmp_path / "short.wav"
    sf.write(files["short"], (0.1 * rng.standard_normal(SR // 10)).astype(np.float32), SR)
    files["junk"] = tmp_path / "junk.wav"
    files["junk"].write_bytes(rng.bytes(5000))
    nan = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    nan[::7] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.transcribe([*map(str, files.values()), nan], vad=False, max_new_tokens=4, progress=False)
    assert any(issubclass(w.category, NonFiniteAudioWarning) for w in caught)
    by_name = dict(zip([*files, "nan"], out, strict=True))
    assert by_name["junk"].error and "junk.wav" in by_name["junk"].error
    assert all(r.ok for k, r in by_name.items() if k != "junk")
    assert by_name["r44100"].duration == pytest.approx(1.0, abs=1e-3)


def test_load_model_attaches_transcribe(tmp_path):
    import copy

    from granite_asr.model.checkpoint import save_pretrained

    save_pretrained(tiny_model("tiny"), tmp_path / "m")
    model = granite_asr.load_model(tmp_path / "m")
    clip = (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    res = model.transcribe(
        clip,
        task="translate",
        language="en",
        target_language="French",
        vad=False,
        max_new_tokens=3,
        progress=False,
    )
    assert res.task == "translate" and res.language == "en" and res.target_language == "fr"
    twin = copy.deepcopy(model)
    assert twin.transcribe.__self__ is twin  # the bound method follows the copy
    assert "transcribe" not in model.state_dict() and isinstance(model, torch.nn.Module)


def scripted_plus(monkeypatch, scripts: list[str]):
    """tiny-plus whose decoder writes scripts[j] on its j-th prefill (then EOS): a real model and engine,
    its head pushed by +1e4 towards the scripted token at every step."""
    model = tiny_model("tiny-plus")
    tok, lm = model.tokenizer, model.language_model
    ids = [tok.encode(s) + [tok.eos_id] for s in scripts]
    state = {"run": -1, "step": 0}
    prefill, head = model.prefill, lm.logits

    def counted_prefill(*args, **kwargs):
        state["run"], state["step"] = state["run"] + 1, 0
        return prefill(*args, **kwargs)

    def scripted(hidden):
        out, script = head(hidden), ids[min(state["run"], len(ids) - 1)]
        out[..., script[min(state["step"], len(script) - 1)]] += 1e4
        state["step"] += 1
        return out

    monkeypatch.setattr(model, "prefill", counted_prefill)
    monkeypatch.setattr(lm, "logits", scripted)
    return model, state


def test_timestamp_loop_is_cut_and_the_window_resumed_after_its_last_word(monkeypatch):
    """A loop whose copies differ only in their times is stopped by the guard (it looks through the
    tags) and the rest of the window is decoded again from the last timed word (Whisper's seek)."""
    loop = " hello [T:50]" + "".join(f" a [T:{60 + 10 * k}]" for k in range(20))
    model, state = scripted_plus(monkeypatch, [loop, " world [T:100]"])
    audio = (0.1 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    kw = {"vad": False, "model_timestamps": True, "max_repeats": 2, "progress": False}
    res = model.transcribe(audio, **kw)
    assert state["run"] == 1  # decoded twice: the window, then its rest after 0.6 s
    assert [(w.word.strip(), w.start, w.end) for w in res.words] == [
        ("hello", 0.0, 0.5),
        ("a", 0.5, 0.6),
        ("world", 0.6, 1.6),
    ]
    assert res.text == "hello a world"
