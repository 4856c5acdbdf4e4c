"""CTC forced alignment (granite_asr/decoding/align.py) on synthetic posteriors with known answers."""

import itertools

import numpy as np
import pytest
import torch

from granite_asr import char_vocab
from granite_asr.decoding import align
from granite_asr.decoding.align import align_batch, align_words


def posteriors(path: str, peak: float = 0.9, vocab: int = char_vocab.SIZE) -> torch.Tensor:
    """One character per frame ('_' = blank) → (T, V) log-softmax with `peak` on that label."""
    T = len(path)
    probs = torch.full((T, vocab), (1 - peak) / (vocab - 1))
    for t, ch in enumerate(path):
        label = char_vocab.BLANK if ch == "_" else char_vocab.char_to_id(ch)
        probs[t, label] = peak
    return probs.log()


def spans(result):
    return [(s.start, s.end) for s in result]


def test_recovers_exact_word_frames():
    lp = posteriors("___cat____dog___")
    out = align_words(lp, ["cat", "dog"])
    assert spans(out) == [(3, 6), (10, 13)]
    assert all(s.aligned and s.confidence == pytest.approx(0.9, abs=1e-4) for s in out)


def test_punctuation_and_case_are_optional_and_folded():
    lp = posteriors("___cat____dog___")
    assert spans(align_words(lp, [" Cat,", " DOG."])) == [(3, 6), (10, 13)]


def test_emitted_space_and_punctuation_are_used_when_present():
    lp = posteriors("__cat,_ _dog.__")
    out = align_words(lp, ["cat,", "dog."])
    assert spans(out) == [(2, 6), (9, 13)]  # the comma / full stop belong to their words


def test_repeated_letters_need_a_blank():
    lp = posteriors("_he_l_lo__")
    assert spans(align_words(lp, ["hello"])) == [(1, 8)]
    # the same letter ending one word and starting the next also needs a blank (or a space)
    assert spans(align_words(posteriors("_a_a_"), ["a", "a"])) == [(1, 2), (3, 4)]


def test_unspellable_words_are_interpolated():
    lp = posteriors("___cat____dog___")
    out = align_words(lp, ["cat", "Ωμέγα", "—", "dog"])
    assert spans(out)[0] == (3, 6) and spans(out)[3] == (10, 13)
    assert spans(out)[1:3] == [(6, 8), (8, 10)]
    assert [s.aligned for s in out] == [True, False, False, True]
    assert out[1].confidence == 0.0


def test_japanese_is_aligned_on_its_reading():
    pytest.importorskip("pyopenjtalk")
    # これは曜日です: the head hears コレ ワ ヨービ デス (は is read ワ; 曜日 is one unit)
    lp = posteriors("__コレ__ワ___ヨ_ー_ビ___デス__")
    out = align_words(lp, [" これ", "は", "曜", "日", "です", "。"])
    assert spans(out)[:2] == [(2, 4), (6, 7)]
    assert spans(out)[2:4] == [(10, 12.5), (12.5, 15)]  # ヨービ (frames 10-14) shared by 曜 and 日
    assert spans(out)[4] == (18, 20)
    assert all(s.aligned for s in out[:5]) and not out[5].aligned
    # kana read as written keep one span per character
    assert spans(align_words(posteriors("_サ_ー_ビ_ス_"), [" サ", "ー", "ビ", "ス"])) == [
        (1, 2),
        (3, 4),
        (5, 6),
        (7, 8),
    ]


def test_japanese_without_the_frontend_aligns_kana_as_written(monkeypatch):
    def missing(text):
        raise ImportError("pyopenjtalk")

    monkeypatch.setattr(char_vocab, "kana_words", missing)
    lp = posteriors("__コレ__ハ______デス__")
    out = align_words(lp, [" これ", "は", "曜", "日", "です"])
    assert spans(out)[:2] == [(2, 4), (6, 7)] and spans(out)[4] == (13, 15)
    assert [s.aligned for s in out] == [True, True, False, False, True]


def test_transcript_longer_than_frames_falls_back_evenly():
    lp = posteriors("_ab_")
    out = align_words(lp, ["abcdef", "ghijkl"])
    assert spans(out) == [(0, 2), (2, 4)]
    assert not any(s.aligned for s in out) and all(s.confidence == 0.0 for s in out)
    # feasible character count but impossible repeats ("aaaa" needs 7 frames) → fallback too
    out = align_words(posteriors("_aaaa_"), ["aaaa"])
    assert not out[0].aligned


def test_empty_inputs():
    assert align_words(posteriors("___"), []) == []
    assert align_batch([], []) == []


def _brute_force_best(lp: torch.Tensor, target: str) -> float:
    labels = [char_vocab.BLANK] + [char_vocab.char_to_id(c) for c in sorted(set(target))]
    want = [char_vocab.char_to_id(c) for c in target]
    best = float("-inf")
    for seq in itertools.product(labels, repeat=lp.shape[0]):
        collapsed = [k for k, _ in itertools.groupby(seq) if k != char_vocab.BLANK]
        if collapsed == want:
            best = max(best, float(sum(lp[t, s] for t, s in enumerate(seq))))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_path_is_optimal(seed):
    """The path score equals the brute-force best over every CTC path (lower-case targets only)."""
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(6, char_vocab.SIZE, generator=g) * 3
    for ch in "ABX":  # keep the folded upper-case labels out of the way
        lp[:, char_vocab.char_to_id(ch)] = -1e4
    lp = lp.log_softmax(-1)
    target = ["ab", "aab", "ba"][seed % 3]
    trellis = align._build_trellis([target])
    ((states, logp),) = align._viterbi([lp], [trellis])
    assert float(logp.sum()) == pytest.approx(_brute_force_best(lp, target), abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_random_posteriors_give_monotonic_spans(seed):
    rng = np.random.default_rng(seed)
    lengths = [80, 120, 50]
    lps = [
        torch.from_numpy(rng.standard_normal((T, char_vocab.SIZE)).astype(np.float32)).log_softmax(-1)
        for T in lengths
    ]
    vocab = ["the", "quick", "Brown", "fox,", "jumps", "over", "lazy", "dog.", "漢", "naïve"]
    words = [list(rng.choice(vocab, size=n)) for n in (8, 14, 3)]
    batched = align_batch(lps, words)
    for lp, ws, out in zip(lps, words, batched, strict=True):
        assert len(out) == len(ws)
        prev_end = 0.0
        for s in out:
            assert 0 <= s.start <= s.end <= lp.shape[0]
            assert s.start >= prev_end - 1e-6  # words never overlap or go back in time
            assert 0.0 <= s.confidence <= 1.0
            prev_end = s.end
        assert out == align_words(lp, ws)  # batching does not change any clip's alignment
