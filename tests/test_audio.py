"""Audio front end: log-mel against an independent numpy implementation (SPEC §2.1), frame counts against
FrameGeometry (SPEC §2.2), batch equivalence, and the loader on real encoded files."""

from __future__ import annotations

import dataclasses
import io
import warnings

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from granite_asr.audio.features import AudioBatch, FeatureExtractor, log_mel
from granite_asr.audio.io import AudioError, NonFiniteAudioWarning, TruncatedAudioWarning, load_audio
from granite_asr.config import FeatureConfig, preset
from granite_asr.lengths import FrameGeometry

SR = 16000
CFG = FeatureConfig()

# ---------------------------------------------------------------------------------- numpy reference


def np_mel_power(x: np.ndarray, n_fft=512, win=400, hop=160, n_mels=80, sr=SR) -> np.ndarray:
    """(L,) → (M, N) mel power, written from the SPEC §2.1 description only (float64, numpy rfft)."""
    x = x.astype(np.float64)
    padded = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")
    m = len(x) // hop + 1
    frames = padded[np.arange(m)[:, None] * hop + np.arange(n_fft)[None, :]]  # (M, n_fft)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    left = (n_fft - win) // 2
    window = np.zeros(n_fft)
    window[left : left + win] = hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (M, F)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(0), mel(sr / 2), n_mels + 2) / 2595) - 1)
    fb = np.zeros((len(freqs), n_mels))
    for b in range(n_mels):
        lo, mid, hi = edges[b : b + 3]
        fb[:, b] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return power @ fb


def np_log_compress(mel: np.ndarray) -> np.ndarray:
    x = np.log10(np.maximum(mel, 1e-10))
    return np.maximum(x, x.max() - 8) / 4 + 1


def sine(freq, seconds, sr=SR, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def peak_hz(x: np.ndarray, sr=SR) -> float:
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.abs(np.fft.rfft(x)).argmax()])


# ---------------------------------------------------------------------------------- (a) log-mel


@pytest.mark.parametrize(
    "name, x",
    [
        ("noise", (0.1 * np.random.default_rng(0).standard_normal(3 * SR + 77)).astype(np.float32)),
        ("sine", sine(440.0, 2.0)),
        ("sine_off_bin", sine(1000.3, 1.0007, amp=0.9)),
    ],
)
def test_log_mel_matches_numpy(name, x):
    ours = log_mel(torch.from_numpy(x), CFG)
    assert ours.shape == (1, len(x) // 160 + 1, 80) and ours.dtype == torch.float32
    ref = np_log_compress(np_mel_power(x))
    assert np.abs(ours[0].numpy() - ref).max() <= 1e-5, name


def test_log_mel_batch_rows_have_their_own_max():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, SR)).astype(np.float32)
    b *= 1e-3  # a much quieter clip: a shared max would floor it differently
    both = log_mel(torch.from_numpy(np.stack([a, b])), CFG)
    assert both.shape == (2, 101, 80)
    for row, x in zip(both, (a, b), strict=True):
        assert np.abs(row.numpy() - np_log_compress(np_mel_power(x))).max() <= 1e-5


def test_stacking_layout_and_nar_max_over_truncated_frames():
    # Silence with a loud burst in the last mel frames, which the NAR truncation drops (SPEC §2.2):
    # the AR reference takes the max before dropping frames, the NAR one after, so the two differ here.
    x = (1e-3 * np.random.default_rng(2).standard_normal(SR + 300)).astype(np.float32)
    x[-100:] += 0.9
    mel = np_mel_power(x)  # (102, 80)
    ar = FeatureExtractor.from_config(preset("2b"))([x]).input_features[0].numpy()
    nar = FeatureExtractor.from_config(preset("2b-nar"))([x]).input_features[0].numpy()
    used_ar, used_nar = 102, 2 * (len(x) // 320)  # 102 mel frames (even: AR keeps all), NAR keeps 100
    ref_ar = np_log_compress(mel)[:used_ar]
    ref_nar = np_log_compress(mel[:used_nar])
    assert ar.shape == (51, 160) and nar.shape == (50, 160)
    assert np.abs(ar[:, :80] - ref_ar[0::2]).max() <= 1e-5  # frame 2k in dims 0-79
    assert np.abs(ar[:, 80:] - ref_ar[1::2]).max() <= 1e-5  # frame 2k+1 in dims 80-159
    assert np.abs(nar - ref_nar.reshape(50, 160)).max() <= 1e-5
    assert np.abs(ar[:50] - nar).max() > 0.1  # the rules really differ on this clip


def stack4_config():
    """4-frame stacking (320-d, 25 Hz): a valid config value of the official layout (NOTES)."""
    cfg = preset("2b")
    return cfg.replace(encoder=dataclasses.replace(cfg.encoder, input_dim=320))


def test_four_frame_stacking_layout():
    x = sine(300.0, 0.5) + 0.01 * np.random.default_rng(3).standard_normal(8000).astype(np.float32)
    feats = FeatureExtractor.from_config(stack4_config())([x]).input_features[0].numpy()
    ref = np_log_compress(np_mel_power(x))  # 51 mel frames → 12 stacked, 3 dropped
    assert feats.shape == (12, 320)
    for j in range(4):
        assert np.abs(feats[:, 80 * j : 80 * (j + 1)] - ref[j:48:4]).max() <= 1e-5


# ---------------------------------------------------------------------------------- (b) frame counts

LENGTHS = [0, 1, 100, 159, 160, 161, 319, 320, 321, 479, 480, 481, 639, 640, 1599, 1600, 1601, 4799]
LENGTHS += [15999, 16000, 16159, 16160, 16319, 16320, 33333, 48000]


@pytest.mark.parametrize("name", ["2b", "2b-nar", "stack4"])
def test_frame_counts_follow_frame_geometry(name):
    config = stack4_config() if name == "stack4" else preset(name)
    geom = FrameGeometry.from_config(config)
    extract = FeatureExtractor.from_config(config)
    rng = np.random.default_rng(4)
    lengths = LENGTHS + rng.integers(1, 40000, size=8).tolist()
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    batch = extract(clips)
    min_len = max(geom.min_samples(), 257)  # 257: reflect padding needs more than n_fft // 2 samples
    assert extract.min_samples == min_len
    want_frames = [geom.encoder_frames(max(n, min_len)) for n in lengths]
    want_tokens = [geom.audio_tokens(t) for t in want_frames]
    assert isinstance(batch, AudioBatch) and len(batch) == len(lengths)
    assert batch.feature_lengths.tolist() == want_frames
    assert batch.audio_token_counts.tolist() == want_tokens
    assert batch.num_samples.tolist() == lengths
    assert batch.input_features.shape == (len(lengths), max(want_frames), config.frames_stacked * 80)
    assert batch.input_features.dtype == torch.float32
    assert batch.input_features_mask.shape == (len(lengths), max(want_tokens))
    assert batch.input_features_mask.sum(1).tolist() == want_tokens
    assert batch.input_features_mask[:, 0].all()  # every clip gets at least one audio token
    assert min(want_frames) >= 1
    for row, t in zip(batch.input_features, want_frames, strict=True):
        assert not row[t:].any()  # zero padding
    # Odd mel counts occurred (the AR drop rule was exercised), and the JFK check of SPEC §12.
    assert any(geom.mel_frames(n) % 2 for n in lengths)
    if name != "stack4":
        assert geom.encoder_frames(176000) == 550


# ---------------------------------------------------------------------------------- (c) batching


@pytest.mark.parametrize("name", ["2b", "2b-nar"])
def test_clip_alone_equals_clip_in_padded_batch(name):
    extract = FeatureExtractor.from_config(preset(name))
    rng = np.random.default_rng(5)
    clips = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (7001, 32000, 100, 16160)]
    batch = extract(clips)
    for i, clip in enumerate(clips):
        alone = extract([torch.from_numpy(clip)])
        t = int(alone.feature_lengths[0])
        assert int(batch.feature_lengths[i]) == t
        assert int(batch.audio_token_counts[i]) == int(alone.audio_token_counts[0])
        assert torch.equal(batch.input_features[i, :t], alone.input_features[0])
        assert not batch.input_features[i, t:].any()


def test_extractor_rejects_integer_and_non_finite_input():
    extract = FeatureExtractor.from_config(preset("2b"))
    with pytest.raises(TypeError, match="integer"):
        extract([np.zeros(1600, dtype=np.int16)])
    bad = np.zeros(1600, dtype=np.float32)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        extract([bad])
    with pytest.raises(ValueError, match="1-D"):
        extract([np.zeros((2, 1600), dtype=np.float32)])


# ---------------------------------------------------------------------------------- (d) loading


def encode_with_pyav(path, codec: str, rate: int, x: np.ndarray) -> None:
    """(C, L) float → an encoded file, through FFmpeg's encoder (so the test has no fixture files)."""
    layout = {1: "mono", 2: "stereo"}[x.shape[0]]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        formats = [f.name for f in stream.codec_context.codec.audio_formats]
        fmt = "fltp" if "fltp" in formats else "flt"
        stream.format = fmt
        step = stream.codec_context.frame_size or 1024
        for i in range(0, x.shape[1], step):
            chunk = x[:, i : i + step].astype(np.float32)
            chunk = chunk if fmt == "fltp" else chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def expected_len(n: int, rate: int) -> int:
    return round(n * SR / rate)


def test_wav_16bit_441k_stereo(tmp_path):
    x = sine(440.0, 1.5, sr=44100)
    path = tmp_path / "talk.wav"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 44100, subtype="PCM_16")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - expected_len(len(x), 44100)) <= 1
    assert abs(peak_hz(y) - 440.0) < 1.0
    assert abs(np.abs(y[2000:-2000]).max() - 0.75 * 0.5) < 0.01  # average of the channels
    # bytes and binary file objects decode identically to the path
    np.testing.assert_array_equal(load_audio(path.read_bytes()), y)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_audio(f), y)


@pytest.mark.parametrize("fmt, subtype", [("flac", "PCM_24"), ("ogg", "VORBIS")])
def test_flac_and_ogg(tmp_path, fmt, subtype):
    x = sine(523.25, 1.2, sr=22050)
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, x, 22050, format=fmt.upper(), subtype=subtype)
    y = load_audio(str(path))
    assert abs(len(y) - expected_len(len(x), 22050)) <= 1
    assert abs(peak_hz(y) - 523.25) < 1.0


@pytest.mark.parametrize("codec, suffix, slack", [("libmp3lame", "mp3", 1), ("aac", "m4a", 1024 + 200)])
def test_lossy_codecs_through_pyav(tmp_path, codec, suffix, slack):
    x = sine(440.0, 1.5, sr=44100)
    path = tmp_path / f"talk.{suffix}"
    encode_with_pyav(path, codec, 44100, np.stack([x, x]))
    y = load_audio(path)
    # MP3 with a LAME header is gapless; raw AAC-in-MP4 keeps its encoder priming (≤ one 1024-sample frame
    # plus padding at 44.1 kHz, rescaled), so only MP3 is held to the ±1-sample rule.
    assert abs(len(y) - expected_len(len(x), 44100)) <= (1 if slack == 1 else expected_len(slack, 44100))
    assert abs(peak_hz(y) - 440.0) < 1.0
    assert 0.3 < np.abs(y).max() < 0.7


def test_soundfile_failure_falls_back_to_pyav(tmp_path):
    # An AAC file saved under a .wav name: libsndfile cannot read it, FFmpeg can.
    x = sine(440.0, 1.0, sr=44100)
    path = tmp_path / "mislabelled.wav"
    encode_with_pyav(tmp_path / "real.m4a", "aac", 44100, x[None])
    path.write_bytes((tmp_path / "real.m4a").read_bytes())
    with pytest.raises(sf.LibsndfileError):
        sf.read(path)
    y = load_audio(path)
    assert abs(peak_hz(y) - 440.0) < 1.5 and len(y) >= expected_len(len(x), 44100)


def test_corrupt_middle_keeps_decoded_part_with_warning(tmp_path):
    x = sine(440.0, 3.0, sr=44100)
    path = tmp_path / "damaged.m4a"
    encode_with_pyav(path, "aac", 44100, x[None])
    data = bytearray(path.read_bytes())
    junk = np.random.default_rng(8).integers(0, 256, len(data) // 3, dtype=np.uint8).tobytes()
    data[len(data) // 3 : len(data) // 3 + len(junk)] = junk
    path.write_bytes(bytes(data))
    with pytest.warns(TruncatedAudioWarning, match="damaged.m4a: truncated or corrupt audio after"):
        y = load_audio(path)
    assert 0 < len(y) < expected_len(len(x), 44100)


def test_pyav_packed_stereo_downmix(tmp_path):
    # A WAV under an extension soundfile is not tried for goes through FFmpeg, whose pcm_s16le frames are
    # packed (interleaved): the downmix must de-interleave before averaging.
    left, right = sine(300.0, 0.5), sine(1100.0, 0.5, amp=0.25)
    path = tmp_path / "stereo.bin"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="PCM_16", format="WAV")
    y = load_audio(path)
    assert len(y) == len(left)
    np.testing.assert_allclose(y, (left + right) / 2, atol=2 / 32768)


def test_six_channel_downmix(tmp_path):
    rng = np.random.default_rng(6)
    x = (0.1 * rng.standard_normal((SR // 2, 6))).astype(np.float32)
    path = tmp_path / "surround.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("rate, freq", [(8000, 1000.0), (48000, 2500.0)])
def test_resample_rates(tmp_path, rate, freq):
    x = sine(freq, 1.3, sr=rate)
    path = tmp_path / f"r{rate}.wav"
    sf.write(path, x, rate, subtype="PCM_16")
    y = load_audio(path)
    assert abs(len(y) - expected_len(len(x), rate)) <= 1
    assert abs(peak_hz(y) - freq) < 1.0
    # soxr VHQ keeps the level in the passband (a naive resampler droops towards Nyquist)
    assert abs(np.sqrt(np.mean(y[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resampler_is_band_limited():
    # 48 kHz → 16 kHz: a 9.5 kHz tone is above the new Nyquist and must vanish, not alias to 6.5 kHz;
    # a 7 kHz tone is in the passband and must keep its level (fails for interpolating resamplers).
    above = load_audio(sine(9500.0, 1.0, sr=48000), source_rate=48000)
    inside = load_audio(sine(7000.0, 1.0, sr=48000), source_rate=48000)
    assert np.sqrt(np.mean(above[500:-500] ** 2)) < 1e-4
    assert abs(np.sqrt(np.mean(inside[500:-500] ** 2)) - 0.5 / np.sqrt(2)) < 0.005


def test_non_finite_samples_replaced(tmp_path):
    x = sine(440.0, 0.25)
    x[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "broken.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with pytest.warns(NonFiniteAudioWarning, match="broken.wav: 3 NaN/Inf"):
        y = load_audio(path)
    assert np.isfinite(y).all() and y[10] == y[20] == y[30] == 0.0
    assert y[11] == x[11]
    with pytest.warns(NonFiniteAudioWarning, match="<array>"):
        assert np.isfinite(load_audio(x)).all()


def test_arrays_pass_through():
    x = sine(440.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = load_audio(x)
    np.testing.assert_array_equal(y, x)
    assert y is not x  # a copy: callers may modify their array
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), pcm / 32768, atol=1e-7)
    stereo = torch.from_numpy(np.stack([x, -x]))  # (C, L): averages to silence
    assert np.abs(load_audio(stereo)).max() < 1e-7
    y8 = load_audio(sine(440.0, 0.5, sr=8000), source_rate=8000)
    assert len(y8) == 8000 and abs(peak_hz(y8) - 440.0) < 2.5
    with pytest.raises(AudioError, match="int64"):
        load_audio(np.zeros(100, dtype=np.int64))


def test_loader_errors_name_the_file(tmp_path):
    empty_wav = tmp_path / "silence.wav"
    sf.write(empty_wav, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silence.wav: contains no audio samples") as err:
        load_audio(empty_wav)
    assert err.value.source == str(empty_wav)

    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    with pytest.raises(AudioError, match="zero.wav: empty file"):
        load_audio(zero)
    with pytest.raises(AudioError, match="<bytes>: empty file"):
        load_audio(b"")

    junk = tmp_path / "notes.mp3"
    junk.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="notes.mp3: cannot decode: not an audio file"):
        load_audio(junk)
    with pytest.raises(AudioError, match="<bytes>: cannot decode"):
        load_audio(b"hello, this is plain text and not audio at all" * 20)

    buf = io.BytesIO()
    sf.write(buf, sine(440.0, 0.5), SR, format="WAV", subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(buf.getvalue()[:30])  # RIFF/WAVE header cut inside the fmt chunk
    with pytest.raises(AudioError, match="cut.wav: cannot decode: looks like WAV but is truncated"):
        load_audio(cut)

    with pytest.raises(AudioError, match="missing.flac: no such file"):
        load_audio(tmp_path / "missing.flac")


def test_video_without_audio_stream(tmp_path):
    path = tmp_path / "silent_film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError, match="silent_film.mp4: no audio stream"):
        load_audio(path)
