"""Fast tier: the word n-gram LM and the char-CTC lexicon search (`decoding/word_lm.py`, `decoding/lexicon.py`)."""

from __future__ import annotations

import math

import pytest
import torch

from granite_asr import char_vocab
from granite_asr.decoding.ctc import greedy_decode
from granite_asr.decoding.lexicon import LexiconDecoder, WordLMs
from granite_asr.decoding.word_lm import BACKOFF, WordLM, normalize_words
from granite_asr.options import DecodeOptions, TranscribeOptions
from granite_asr.train.recipe import main as train_main

SENTENCES = ["I see you.", "I see the sea!", "You see the world", "Hello world", "hello, hello world"]


def emissions(frames: list[dict[str, float]]) -> torch.Tensor:
    """(T, V) log-probs: each frame's named chars get their probability, the rest goes to blank."""
    probs = torch.full((len(frames), char_vocab.SIZE), 1e-6)
    for t, frame in enumerate(frames):
        for ch, p in frame.items():
            probs[t, char_vocab.char_to_id(ch)] = p
        probs[t, char_vocab.BLANK] = max(1e-6, 1.0 - sum(frame.values()))
    return (probs / probs.sum(-1, keepdim=True)).log()


def spell(text: str, swap: dict[int, dict[str, float]] | None = None) -> list[dict[str, float]]:
    """One frame per char with a blank frame after each (so doubled letters survive CTC collapse);
    `swap[i]` replaces char i's frame."""
    frames: list[dict[str, float]] = []
    for i, ch in enumerate(text):
        frames += [(swap or {}).get(i, {ch: 0.9}), {}]
    return frames


def greedy(lp: torch.Tensor) -> str:
    return char_vocab.decode(greedy_decode(lp[None], torch.tensor([lp.shape[0]]), char_vocab.BLANK)[0])


def test_counts_and_stupid_backoff_scores():
    lm = WordLM.train(SENTENCES, "en", order=3)
    assert normalize_words("Hello, hello world!") == ["hello", "hello", "world"]
    assert lm.counts[("see",)] == 3 and lm.counts[("i", "see")] == 2 and lm.counts[("<s>", "i")] == 2
    assert lm.counts[()] == sum(len(normalize_words(s)) + 1 for s in SENTENCES)  # words + </s>
    assert lm.logprob(("i", "see"), "the") == pytest.approx(math.log(1 / 2))  # trigram seen
    # "you see" unseen as a history of "you": back off to the bigram "see you" (1 of 3 "see")
    assert lm.logprob(("the", "see"), "you") == pytest.approx(BACKOFF + math.log(1 / 3))
    assert lm.logprob(("<s>",), "hello") == pytest.approx(math.log(2 / 5))  # 2 of 5 sentences
    unseen = lm.logprob(("i", "see"), "zebra")
    assert unseen == pytest.approx(2 * BACKOFF + math.log(0.5 / lm.counts[()]))
    assert unseen < lm.logprob(("i", "see"), "world") < lm.logprob(("i", "see"), "the")


def test_min_count_prunes_higher_orders_but_keeps_the_lexicon():
    lm = WordLM.train(SENTENCES, "en", order=3, min_count=2)
    assert ("sea",) in lm.counts and ("the", "sea") not in lm.counts
    assert ("i", "see") in lm.counts
    assert "sea" in lm.words and "<s>" not in lm.words and "</s>" not in lm.words


def test_save_load_round_trip_is_byte_stable(tmp_path):
    lm = WordLM.train(SENTENCES, "en")
    a, b = lm.save(tmp_path / "a" / "en.tsv.gz"), WordLM.train(SENTENCES, "en").save(tmp_path / "en.tsv.gz")
    assert a.read_bytes() == b.read_bytes()
    back = WordLM.load(a)
    assert (back.lang, back.order, back.counts) == ("en", 3, lm.counts)
    (tmp_path / "bad.tsv.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.tsv.gz"):
        WordLM.load(tmp_path / "bad.tsv.gz")


def test_lexicon_search_spells_words_of_the_language():
    dec = LexiconDecoder(WordLM.train(SENTENCES, "en"))
    # "world" with its vowel heard as "a" more than "o": greedy writes a non-word
    lp = emissions(spell("hello world", swap={7: {"a": 0.5, "o": 0.4}}))
    assert greedy(lp) == "hello warld"
    assert dec.decode(lp) == "hello world"
    assert dec.decode(torch.zeros(0, char_vocab.SIZE)) == ""
    with pytest.raises(ValueError, match="logprobs must be"):
        dec.decode(torch.zeros(4, 10))


def test_the_word_lm_breaks_an_acoustic_tie_by_context():
    dec = LexiconDecoder(WordLM.train(SENTENCES, "en"))
    # the last vowel is "e" or "a" at even odds, so "see" and "sea" sound alike here
    tie = {"e": 0.45, "a": 0.45}
    assert dec.decode(emissions(spell("i see", swap={4: tie}))) == "i see"  # seen twice, "i sea" never
    assert dec.decode(emissions(spell("the sea", swap={6: tie}))) == "the sea"  # and "the see" never


def test_general_vocabulary_joins_the_lexicon_without_diluting_the_ngrams(tmp_path):
    lm = WordLM.train(SENTENCES, "en")
    general = {"zebra": 3.0, "the": 5.0, "Hello": 2.0, "two words": 9.0, "?!": 1.0, "αβ": 4.0, "ツ": 4.0}
    big = lm.with_vocabulary(general, weight=2.0)
    assert "zebra" in big.words and "zebra" not in lm.words
    assert "two words" not in big.words and "?!" not in big.words  # not one spellable word: skipped
    assert "αβ" not in big.words and "ツ" not in big.words  # scripts no sentence uses
    # 10 listed units spread over 2 x the sentences' tokens; "Hello" is normalised to "hello"
    total = lm.counts[()]
    assert big.vocab == {w: round(f * 2 * total / 10) for w, f in (("zebra", 3), ("the", 5), ("hello", 2))}
    grand = total + sum(big.vocab.values())
    assert big.logprob(("i", "see"), "zebra") == pytest.approx(
        2 * BACKOFF + math.log(big.vocab["zebra"] / grand)
    )
    unigram = (lm.counts[("the",)] + big.vocab["the"]) / grand
    assert big.logprob((), "the") == pytest.approx(math.log(unigram))
    # an n-gram's history count stays the sentences': "see the" scores as before
    assert big.logprob(("i", "see"), "the") == lm.logprob(("i", "see"), "the")
    assert big.logprob(("you", "see"), "the") == lm.logprob(("you", "see"), "the")
    back = WordLM.load(big.save(tmp_path / "en.tsv.gz"))
    assert (back.counts, back.vocab, back.words) == (big.counts, big.vocab, big.words)
    assert back.logprob(("i", "see"), "zebra") == big.logprob(("i", "see"), "zebra")
    with pytest.raises(ValueError, match="weight"):
        lm.with_vocabulary(general, weight=0)
    # and the search can now write the general word
    lp = emissions(spell("hello zebra"))
    assert LexiconDecoder(lm).decode(lp) != "hello zebra"
    assert LexiconDecoder(big).decode(lp) == "hello zebra"


def test_japanese_words_are_matched_by_reading_and_written_as_text(tmp_path):
    """The char head spells Japanese in katakana; a Japanese LM's words carry their readings, so the
    search matches the reading and writes the words, without spaces, choosing among homophones by the LM."""
    sentences = [["橋", "を", "渡る"], ["箸", "で", "食べる"], ["橋", "を", "見る"], ["端", "に", "ある"]]
    readings = {"橋": ["ハシ"], "箸": ["ハシ"], "端": ["ハシ", "ハジ"], "を": ["ヲ"], "渡る": ["ワタル"]}
    readings |= {"で": ["デ"], "食べる": ["タベル"], "見る": ["ミル"], "に": ["ニ"], "ある": ["アル"]}
    lm = WordLM.train(sentences, "ja").with_spellings(readings)
    assert lm.separator == "" and lm.spelling("端") == ("ハシ", "ハジ") and lm.spelling("x") == ("x",)
    back = WordLM.load(lm.save(tmp_path / "ja.tsv.gz"))
    assert (back.counts, back.spellings) == (lm.counts, lm.spellings)
    dec = LexiconDecoder(back)
    assert dec.decode(emissions(spell("ハシヲワタル"))) == "橋を渡る"  # 橋 is the likelier ハシ
    assert dec.decode(emissions(spell("ハシデタベル"))) == "箸で食べる"  # but after it comes で: 箸
    assert dec.decode(emissions(spell("ハジニアル"))) == "端にある"  # 端's second reading
    # a keyword, kanji (read by pyopenjtalk) or kana, wins its homophones where the audio allows it
    assert LexiconDecoder(back, keywords=("箸",)).decode(emissions(spell("ハシヲワタル"))) == "箸を渡る"
    cat = emissions(spell("ネコヲミル"))  # ネコ is no word of the LM: only a keyword can write it
    assert "ねこ" not in LexiconDecoder(back).decode(cat)
    assert LexiconDecoder(back, keywords=("ねこ",)).decode(cat) == "ねこを見る"
    # more homophones than a trie node holds: the likeliest are kept, the search still runs
    many = WordLM.train([[f"語{i}"] for i in range(9) for _ in range(i + 1)], "ja")  # 語8 most often
    many = many.with_spellings({f"語{i}": ["ゴ"] for i in range(9)})
    assert LexiconDecoder(many).decode(emissions(spell("ゴ"))) == "語8"
    # a katakana greedy transcript now has a language: the one whose words are spelt in katakana
    WordLM.train(SENTENCES, "en").save(tmp_path / "en.tsv.gz")
    assert WordLMs(tmp_path).language_candidates("ハシヲワタル") == ["ja"]
    # the head runs Japanese words together: trigrams across word pairs count as seen
    assert WordLMs(tmp_path).language_candidates("ハシヲワタルハシデタベル") == ["ja"]
    # and katakana is Japanese's script alone: trigrams never seen still make a Japanese transcript
    assert WordLMs(tmp_path).language_candidates("ルタワシハ ルベタ") == ["ja"]
    assert WordLMs(tmp_path).language_candidates("ルタワ xyzq vwk") == []  # mixed scripts: no owner
    assert WordLMs(tmp_path).language_candidates("i see the world") == ["en"]


def test_wordlm_stage_segments_japanese(tmp_path):
    text = tmp_path / "ja.txt"
    text.write_text("本書は有用です。\n数値のコサインを返します。\n本書を返します。", "utf-8")
    train_main(["wordlm", "--out", str(tmp_path), "--langs", "ja", "--text", str(text), "--min-count", "1"])
    lm = WordLM.load(tmp_path / "ja.tsv.gz")
    assert {"本書", "コサイン", "返し"} <= set(lm.words) and "。" not in lm.words
    assert lm.spelling("本書") == ("ホンショ",) and lm.spelling("は") == ("ワ",)  # the particle's reading
    assert lm.counts[("本書",)] == 2 and ("返し", "ます") in lm.counts
    dec = LexiconDecoder(lm)
    assert dec.decode(emissions(spell("ホンショヲカエシマス"))) == "本書を返します"


def test_keywords_bias_the_search():
    """Keyword biasing for the char head: a keyword joins the lexicon as written and is preferred where
    the audio allows it, and never written where it was not said."""
    lm = WordLM.train(SENTENCES, "en")
    zebra = emissions(spell("hello zebra"))
    assert LexiconDecoder(lm).decode(zebra) != "hello Zebra"  # not a word of the lexicon
    assert LexiconDecoder(lm, keywords=("Zebra,",)).decode(zebra) == "hello Zebra"  # case kept, comma dropped
    assert LexiconDecoder(lm, keywords=("Zebra",)).decode(emissions(spell("hello world"))) == "hello world"
    tie = emissions(spell("i see", swap={4: {"e": 0.45, "a": 0.45}}))
    assert LexiconDecoder(lm).decode(tie) == "i see"
    assert LexiconDecoder(lm, keywords=("sea",)).decode(tie) == "i sea"  # the keyword wins the tie


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wordlm")
    WordLM.train(SENTENCES, "en").save(d / "en.tsv.gz")
    es = ["la casa de la playa", "el perro de la casa", "que los parámetros de la impresora"]
    WordLM.train(es, "es").save(d / "es.tsv.gz")
    return d


def test_language_guess_from_misspelt_greedy_words(lm_dir):
    lms = WordLMs(lm_dir)
    assert lms.languages == ("en", "es")
    assert lms.guess_language("helo wrld you se") == "en"
    assert lms.guess_language("la kasa de los parametos") == "es"
    assert lms.guess_language("コレイチブノサビス") is None  # katakana: no trigram seen anywhere
    assert lms.guess_language("") is None
    assert lms.language_candidates("hello wrld") == ["en"]
    assert lms.language_candidates("hello wrld", margin=100.0) == ["en", "es"]  # a close call: search both
    lp = emissions(spell("hello world", swap={7: {"a": 0.5, "o": 0.4}}))
    assert lms.decode(lp, "hello warld", None) == "hello world"
    assert lms.decode(lp, "hello warld", "ja") is None  # no Japanese word LM: the caller keeps greedy
    # the search scores decide a close call: English words explain English sounds better
    (en_text, en_score), (es_text, es_score) = (lms.decoder(lang).search(lp) for lang in ("en", "es"))
    assert en_text == "hello world" and en_score > es_score


def test_keyword_decoders_are_cached_and_bounded(lm_dir):
    lms = WordLMs(lm_dir)
    base = lms.decoder("en")
    assert lms.decoder("en", ()) is base and lms.decoder("en", ("Zebra",)) is lms.decoder("en", ("Zebra",))
    for i in range(12):
        lms.decoder("en", (f"word{i}",))
    assert sum(1 for lang, kw in lms._decoders if kw) == 8 and lms.decoder("en") is base
    lp = emissions(spell("hello zebra"))
    assert lms.decode(lp, "hello zebra", "en", ("Zebra",)) == "hello Zebra"
    assert lms.decode(lp, "hello zebra", None, ("Zebra",)).endswith("Zebra")  # language guessed


def test_word_lm_option_is_validated(lm_dir):
    for ok in ("auto", "none", str(lm_dir)):
        TranscribeOptions(decode=DecodeOptions(word_lm=ok)).validate("ar")
    with pytest.raises(ValueError, match="word_lm"):
        TranscribeOptions(decode=DecodeOptions(word_lm="nowhere")).validate("ar")


def test_wordlm_stage_builds_from_a_text_file(tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(SENTENCES), "utf-8")
    train_main(["wordlm", "--out", str(tmp_path / "lm"), "--langs", "en", "--text", str(text)])
    assert (
        WordLM.load(tmp_path / "lm" / "en.tsv.gz").counts == WordLM.train(SENTENCES, "en", min_count=2).counts
    )
    with pytest.raises(SystemExit, match="one language"):
        train_main(["wordlm", "--out", str(tmp_path / "lm"), "--langs", "en,es", "--text", str(text)])


def test_wordlm_stage_adds_wordfreq_words(tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(SENTENCES), "utf-8")
    argv = ["wordlm", "--out", str(tmp_path / "lm"), "--langs", "en", "--text", str(text)]
    train_main([*argv, "--general-words", "2000"])
    lm = WordLM.load(tmp_path / "lm" / "en.tsv.gz")
    assert {"because", "people", "water"} <= set(lm.words)  # everyday words none of SENTENCES has
    assert lm.counts == WordLM.train(SENTENCES, "en", min_count=2).counts
    assert 1500 < len(lm.vocab) <= 2000  # digits and letters no sentence has are left out
    assert not any(c.isdigit() for w in lm.vocab for c in w)


def _hunspell(lang_dict: str) -> None:
    import shutil
    from pathlib import Path

    if not shutil.which("hunspell") or not Path(f"/usr/share/hunspell/{lang_dict}.dic").exists():
        pytest.skip("hunspell dictionaries (scripts/setup_data.sh)")


def test_spell_check_drops_misspellings_and_accentless_forms():
    from granite_asr.train.word_lms import spelled

    _hunspell("fr_FR")
    _hunspell("de_DE")
    assert spelled(["être", "etre", "très", "tres", "paris"], "fr") == {"être", "très", "paris"}  # Paris
    assert spelled(["straße", "haus", "hauss"], "de") == {"straße", "haus"}  # nouns pass capitalised
    assert spelled(["これ", "xyz"], "ja") == {"これ", "xyz"}  # no dictionary: every word kept


def test_wordlm_stage_spell_checks_the_general_words(tmp_path):
    _hunspell("en_US")
    text = tmp_path / "domain.txt"
    text.write_text("\n".join(SENTENCES), "utf-8")
    argv = [
        "wordlm",
        "--out",
        str(tmp_path / "lm"),
        "--langs",
        "en",
        "--text",
        str(text),
        "--general-words",
        "3000",
    ]
    train_main(argv)
    plain = WordLM.load(tmp_path / "lm" / "en.tsv.gz")
    train_main([*argv, "--spell-check"])
    checked = WordLM.load(tmp_path / "lm" / "en.tsv.gz")
    assert "dont" in plain.vocab and "dont" not in checked.vocab
    assert {"centre", "labour", "because", "people"} <= set(checked.vocab)  # British spellings too (en_GB)
    assert len(checked.vocab) > 0.9 * len(plain.vocab)  # as many words, the misspelt ones replaced


def test_auto_falls_back_to_greedy_without_flashlight(monkeypatch):
    """Where flashlight-text has no wheel (Python 3.13), `available()` warns once and says no, so
    `word_lm="auto"` keeps the greedy text instead of failing."""
    from granite_asr.decoding import lexicon

    def missing():
        raise RuntimeError("the word-LM decoder needs flashlight-text")

    monkeypatch.setattr(lexicon, "_flashlight", missing)
    lexicon.available.cache_clear()
    try:
        with pytest.warns(UserWarning, match="greedy spelling"):
            assert lexicon.available() is False
    finally:
        lexicon.available.cache_clear()
