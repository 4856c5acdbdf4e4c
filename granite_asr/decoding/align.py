"""CTC forced alignment of words against the char head's posteriors (issue 3 §3: word timestamps for
every variant from one vectorised Viterbi; word confidence from the CTC posteriors).

The transcript's characters (`char_vocab.encode`, SPEC §3.6) are laid out on the usual blank-interleaved
trellis `blank c1 blank c2 … cN blank` (S = 2N + 1 states). The Viterbi runs frame by frame, with all
states updated at once by torch ops over the state axis (and over a batch of clips), never by a Python
loop over states. Three liberties keep the trellis honest for a text the char head was not trained to
spell verbatim:

- **Optional tokens**: spaces and punctuation may be skipped (up to `MAX_SKIP` in a row), because the
  LLM's punctuated, cased text has marks the char head may never emit.
- **Case-insensitive letters**: each letter state scores max(log p(upper), log p(lower)).
- **Infeasible texts** (more mandatory characters than frames, e.g. a hallucinated runaway text on a
  short window) return evenly spaced spans flagged `aligned=False` with confidence 0, instead of raising.

**Japanese is aligned on its reading.** The head spells Japanese as it is pronounced, in katakana
(SPEC §3.6), so a run of words written in kana and kanji is read with pyopenjtalk — the frontend that made
the CTC targets (`char_vocab.kana_words`) — and each of its words (one per character, as
`transcribe.assemble.split_words` cuts them) is aligned as part of its reading unit: 曜日 as ヨービ,
は as ワ. A unit's span is shared evenly by its characters. Without pyopenjtalk, kana align as written.

Words with no mandatory character left (kanji without pyopenjtalk, a lone dash, another script) get a
span interpolated between their aligned neighbours, also with `aligned=False`.

**Confidence** of a word = the mean, over the frames where the best path emits one of the word's
characters, of that character's posterior probability exp(log p) (≈ the mean per-character posterior,
since CTC emits most characters on a single peaked frame). It is a real probability in [0, 1], unlike the
fabricated values some tools print (PEERS §5.12).

Shapes: B clips, T frames, V labels (348), S trellis states, K = 2·MAX_SKIP + 2 the longest jump.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import char_vocab

MAX_SKIP = 2  # optional tokens one transition may skip (", " or ". " between words)
K = 2 * MAX_SKIP + 2
_NEG = float("-inf")
# Kana, kanji and the iteration mark 々: text the Japanese frontend reads (punctuation 、。 included).
_JAPANESE = re.compile("[\u3001-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# Bound on B·T·S per Viterbi call (backpointers int8 + emissions float32 ≈ 5 bytes each → ~160 MB).
MAX_ELEMENTS = 32_000_000


@dataclass(frozen=True)
class WordSpan:
    """One word's place in the clip, in encoder frames (floats: interpolated spans fall between frames)."""

    start: float  # first frame emitting the word
    end: float  # one past the last frame emitting the word
    confidence: float  # see the module docstring; 0.0 when not aligned
    aligned: bool  # False: interpolated or fallback, not placed by the Viterbi path


@dataclass
class _Trellis:
    """Per-clip state layout: labels (two alternatives per state), optional flags, word ranges."""

    label_a: np.ndarray  # (S,) int64
    label_b: np.ndarray  # (S,) int64, the other letter case (or label_a)
    optional: np.ndarray  # (S,) bool; blanks are False (they follow their own rules)
    word_states: list[tuple[int, int] | None]  # per word: first and last token state, or None
    mandatory: int  # tokens that cannot be skipped


@dataclass(frozen=True)
class _Unit:
    """Words first..last-1 aligned as one spelling (one word, or one Japanese reading unit)."""

    first: int
    last: int
    spelling: str


def _units(words: Sequence[str]) -> list[_Unit]:
    """Words → alignment units: each word alone, except runs of Japanese words, which go by reading."""
    units: list[_Unit] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and _JAPANESE.fullmatch(words[j].strip()):
            j += 1
        if j == i:
            units.append(_Unit(i, i + 1, words[i]))
            i += 1
        else:
            units.extend(_reading_units(words, i, j))
            i = j
    return units


def _reading_units(words: Sequence[str], i: int, j: int) -> list[_Unit]:
    """Japanese words i..j-1 → units of their readings. Frontend nodes are merged until they end on a word
    boundary; as written (one unit a word) without pyopenjtalk or when its surfaces do not match."""
    as_written = [_Unit(k, k + 1, words[k]) for k in range(i, j)]
    texts = [w.strip() for w in words[i:j]]
    try:
        nodes = char_vocab.kana_words("".join(texts))
    except ImportError:
        return as_written
    if "".join(n[0] for n in nodes) != "".join(texts):
        return as_written
    ends = dict(zip(np.cumsum([len(t) for t in texts]).tolist(), range(i + 1, j + 1), strict=True))
    units, first, pos, written, reading = [], i, 0, "", ""
    for surface, pron, _ in nodes:
        pos, written, reading = pos + len(surface), written + surface, reading + pron
        if pos not in ends:
            continue
        if char_vocab.encode(written) == char_vocab.encode(reading):  # kana read as written: one a word
            units.extend(as_written[first - i : ends[pos] - i])
        else:
            units.append(_Unit(first, ends[pos], reading))
        first, written, reading = ends[pos], "", ""
    return units


def _share(spans: list[WordSpan], units: list[_Unit]) -> list[WordSpan]:
    """Unit spans → word spans: a unit's span is split evenly among its words."""
    out: list[WordSpan] = []
    for span, u in zip(spans, units, strict=True):
        n = u.last - u.first
        step = (span.end - span.start) / n
        out.extend(
            WordSpan(span.start + k * step, span.start + (k + 1) * step, span.confidence, span.aligned)
            for k in range(n)
        )
    return out


def _is_optional(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PS"


def _labels(ch: str) -> tuple[int, int] | None:
    a = char_vocab.char_to_id(ch)
    if a is None:
        return None
    swapped = ch.swapcase()
    b = char_vocab.char_to_id(swapped) if len(swapped) == 1 else None
    return a, (b if b is not None else a)


def _build_trellis(words: Sequence[str]) -> _Trellis:
    """Words → token layout; an optional space separates words (its state belongs to no word)."""
    tokens: list[tuple[int, int, bool]] = []
    word_states: list[tuple[int, int] | None] = []
    for w in words:
        chars = [(c, _labels(c)) for c in char_vocab.normalize(w)]
        chars = [(c, lab) for c, lab in chars if lab is not None and not c.isspace()]
        if tokens and chars:
            tokens.append((32, 32, True))
        first = len(tokens)
        tokens.extend((a, b, _is_optional(c)) for c, (a, b) in chars)
        has_mandatory = any(not opt for _, _, opt in tokens[first:])
        word_states.append((2 * first + 1, 2 * len(tokens) - 1) if has_mandatory else None)
    n = len(tokens)
    label_a = np.zeros(2 * n + 1, dtype=np.int64)
    label_b = np.zeros(2 * n + 1, dtype=np.int64)
    optional = np.zeros(2 * n + 1, dtype=bool)
    for j, (a, b, opt) in enumerate(tokens):
        label_a[2 * j + 1], label_b[2 * j + 1], optional[2 * j + 1] = a, b, opt
    mandatory = sum(1 for *_, opt in tokens if not opt)
    return _Trellis(label_a, label_b, optional, word_states, mandatory)


def _transition_bias(tr: _Trellis) -> np.ndarray:
    """(S, K + 1) additive bias: 0 where s − d → s is a legal move, −inf elsewhere (d = 0 is a stay).

    A move may only skip blanks and optional tokens, and two tokens with the same (case-folded) label
    may not follow each other without a blank in between (they would collapse into one).
    """
    S = len(tr.label_a)
    bias = np.full((S, K + 1), _NEG, dtype=np.float32)
    bias[:, 0] = 0.0
    is_token = np.arange(S) % 2 == 1
    # blocking[k] = mandatory tokens among states 0..k; a move s − d → s skips blocking[s−1] − blocking[s−d].
    blocking = np.cumsum(is_token & ~tr.optional)
    folded = np.minimum(tr.label_a, tr.label_b)
    for d in range(1, K + 1):
        s = np.arange(d, S)
        src = s - d
        ok = blocking[s - 1] - blocking[src] == 0
        ok &= ~(is_token[src] & is_token[s] & (folded[src] == folded[s]))
        bias[s[ok], d] = 0.0
    return bias


def _ends(tr: _Trellis) -> tuple[np.ndarray, np.ndarray]:
    """(S,) bool masks of legal first and last states (skipping leading/trailing optional tokens)."""
    S = len(tr.label_a)
    mandatory = np.flatnonzero((np.arange(S) % 2 == 1) & ~tr.optional)
    first_m = mandatory[0] if len(mandatory) else S - 1
    last_m = mandatory[-1] if len(mandatory) else 0
    idx = np.arange(S)
    return idx <= first_m, idx >= last_m


# ------------------------------------------------------------------------------------------ Viterbi


@torch.inference_mode()
def _viterbi(logps: list[torch.Tensor], trellises: list[_Trellis]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Best paths for a batch. → per clip (state per frame (T,), emission log-prob per frame (T,)),
    or an empty state array when no path exists."""
    B = len(logps)
    T = max(lp.shape[0] for lp in logps)
    S = max(len(tr.label_a) for tr in trellises)
    emit = torch.full((B, T, S), _NEG)  # (B, T, S)
    bias = torch.full((B, S, K + 1), _NEG)  # (B, S, K+1)
    start = torch.full((B, S), _NEG)
    final = torch.zeros((B, S), dtype=torch.bool)
    lengths = torch.tensor([lp.shape[0] for lp in logps])
    for b, (lp, tr) in enumerate(zip(logps, trellises, strict=True)):
        s_b, t_b = len(tr.label_a), lp.shape[0]
        lp = lp.float()
        e = torch.maximum(lp[:, torch.from_numpy(tr.label_a)], lp[:, torch.from_numpy(tr.label_b)])
        emit[b, :t_b, :s_b] = e  # (T_b, S_b)
        bias[b, :s_b] = torch.from_numpy(_transition_bias(tr))
        first_ok, last_ok = _ends(tr)
        start[b, :s_b] = torch.where(torch.from_numpy(first_ok), 0.0, _NEG)
        final[b, :s_b] = torch.from_numpy(last_ok)
    backptr = torch.zeros((B, T, S), dtype=torch.int8)
    buf = torch.full((B, K + S), _NEG)  # K leading −inf columns make every shift a view
    buf[:, K:] = start + emit[:, 0]
    for t in range(1, T):
        cand = buf.unfold(1, K + 1, 1).flip(-1) + bias  # (B, S, K+1): [..., d] = alpha[s − d]
        best, arg = cand.max(dim=-1)  # (B, S)
        new = best + emit[:, t]
        live = (t < lengths)[:, None]  # frames past a clip's end leave its alpha untouched
        buf[:, K:] = torch.where(live, new, buf[:, K:])
        backptr[:, t] = torch.where(live, arg, 0).to(torch.int8)
    alpha = buf[:, K:].masked_fill(~final, _NEG)
    score, last = alpha.max(dim=-1)
    return [
        _backtrack(backptr[b], emit[b], int(last[b]), int(lengths[b]))
        if score[b] > _NEG
        else (np.zeros(0), np.zeros(0))
        for b in range(B)
    ]


def _backtrack(backptr: torch.Tensor, emit: torch.Tensor, last: int, length: int):
    bp = backptr[:length].numpy()
    states = np.empty(length, dtype=np.int64)
    s = last
    for t in range(length - 1, -1, -1):
        states[t] = s
        s -= int(bp[t, s])
    logp = emit[:length].numpy()[np.arange(length), states]
    return states, logp


# ------------------------------------------------------------------------------------------ spans


def _spans_from_path(tr: _Trellis, states: np.ndarray, logp: np.ndarray) -> list[WordSpan | None]:
    spans: list[WordSpan | None] = []
    emitting = states % 2 == 1
    for ws in tr.word_states:
        if ws is None:
            spans.append(None)
            continue
        frames = np.flatnonzero(emitting & (states >= ws[0]) & (states <= ws[1]))
        conf = float(np.exp(logp[frames]).mean())
        spans.append(WordSpan(float(frames[0]), float(frames[-1] + 1), conf, True))
    return spans


def _fill_gaps(spans: list[WordSpan | None], num_frames: int) -> list[WordSpan]:
    """Spread words that have no span evenly over the gap between their aligned neighbours."""
    out: list[WordSpan] = []
    i = 0
    while i < len(spans):
        if spans[i] is not None:
            out.append(spans[i])
            i += 1
            continue
        j = i
        while j < len(spans) and spans[j] is None:
            j += 1
        lo = out[-1].end if out else 0.0
        hi = spans[j].start if j < len(spans) else float(num_frames)
        hi = max(hi, lo)
        step = (hi - lo) / (j - i)
        out.extend(WordSpan(lo + k * step, lo + (k + 1) * step, 0.0, False) for k in range(j - i))
        i = j
    return out


def align_batch(char_logits: Sequence[torch.Tensor], words: Sequence[Sequence[str]]) -> list[list[WordSpan]]:
    """Align each clip's words. char_logits[i]: (T_i, V) log-softmax char posteriors; words[i]: its words.

    Clips are batched so one Viterbi serves many (B·T·S ≤ MAX_ELEMENTS per call). → spans per word.
    """
    if len(char_logits) != len(words):
        raise ValueError(f"{len(char_logits)} posteriors but {len(words)} word lists")
    units = [_units(w) for w in words]
    trellises = [_build_trellis([u.spelling for u in us]) for us in units]
    results: list[list[WordSpan] | None] = [None] * len(words)
    todo = []
    for i, (lp, tr) in enumerate(zip(char_logits, trellises, strict=True)):
        if lp.dim() != 2:
            raise ValueError(f"char_logits[{i}] must be (T, V), got {tuple(lp.shape)}")
        if not words[i]:
            results[i] = []
        elif tr.mandatory == 0 or tr.mandatory > lp.shape[0]:
            # nothing to align, or too long
            results[i] = _share(_fill_gaps([None] * len(units[i]), lp.shape[0]), units[i])
        else:
            todo.append(i)
    todo.sort(key=lambda i: char_logits[i].shape[0])  # similar lengths share a batch
    while todo:
        group = [todo.pop(0)]
        while todo:
            T = char_logits[todo[0]].shape[0]
            S = max(len(trellises[i].label_a) for i in [*group, todo[0]])
            if (len(group) + 1) * T * S > MAX_ELEMENTS:
                break
            group.append(todo.pop(0))
        paths = _viterbi([char_logits[i] for i in group], [trellises[i] for i in group])
        for i, (states, logp) in zip(group, paths, strict=True):
            frames = char_logits[i].shape[0]
            spans = _spans_from_path(trellises[i], states, logp) if len(states) else [None] * len(units[i])
            results[i] = _share(_fill_gaps(spans, frames), units[i])
    return results  # type: ignore[return-value]


def align_words(char_logits: torch.Tensor, words: Sequence[str]) -> list[WordSpan]:
    """One clip: (T, V) log-softmax char posteriors and its words → one span per word."""
    return align_batch([char_logits], [words])[0]
