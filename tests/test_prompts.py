"""Exact prompt strings (SPEC §5.6), audio-token expansion (§5.4), task validation (§8.1), left padding."""

from __future__ import annotations

import pytest
import torch

from granite_asr.config import preset
from granite_asr.lengths import FrameGeometry
from granite_asr.prompts import (
    build_prompt,
    canonical_language,
    encode_prompts,
    expand_audio_tokens,
    time_tag_token_ids,
    validate_task,
)
from granite_asr.tokenizer import Tokenizer

from .helpers_tokenizer import make_tokenizer

PLUS_HEAD = (
    "<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.\n"
    "Today's Date: December 19, 2024.\n"
    "You are Granite, developed by IBM. You are a helpful AI assistant<|end_of_text|>\n"
    "<|start_of_role|>user<|end_of_role|>"
)
PLUS_TAIL = "<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"


def ar(instruction: str) -> str:
    return f"USER: <|audio|>{instruction}\n ASSISTANT:"


def plus(instruction: str) -> str:
    return f"{PLUS_HEAD}<|audio|> {instruction}{PLUS_TAIL}"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ar("transcribe the speech with proper punctuation and capitalization.")),
        ({"punctuated": False}, ar("can you transcribe the speech into a written format?")),
        ({"language": "fr"}, ar("transcribe the French speech with proper punctuation and capitalization.")),
        ({"keywords": ["Granite", "IBM"]}, ar("transcribe the speech to text. Keywords: Granite, IBM")),
        (
            {"task": "translate", "target_language": "de"},
            ar("translate the speech to German with proper punctuation and capitalization."),
        ),
        (
            {"task": "translate", "target_language": "zh", "punctuated": False},
            ar("translate the speech to Mandarin."),
        ),
        (
            {"task": "translate", "target_language": "French", "keywords": ["kw1", "kw2"]},
            ar("translate the speech to French. Keywords: kw1, kw2"),
        ),
        (
            {"task": "translate", "language": "ja", "target_language": "en"},
            ar("translate the speech to English with proper punctuation and capitalization."),
        ),
    ],
)
def test_ar_prompts_exact(kwargs, expected):
    assert build_prompt("ar", **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, plus("can you transcribe the speech into a written format?")),
        ({"punctuated": False}, plus("can you transcribe the speech into a written format?")),
        ({"language": "Spanish"}, plus("can you transcribe the Spanish speech into a written format?")),
        (
            {"speakers": True},
            plus(
                "Speaker attribution: Transcribe and denote who is speaking by adding [Speaker 1]: "
                "and [Speaker 2]: tags before speaker turns."
            ),
        ),
        (
            {"timestamps": True},
            plus(
                "Timestamps: Transcribe the speech. After each word, add a timestamp tag showing the end time "
                "in centiseconds, e.g. hello [T:45] world [T:82]"
            ),
        ),
        (
            {"keywords": ["kw1", " kw2 ", "kw1"]},
            plus("can you transcribe the speech into a written format? Keywords: kw1, kw2"),
        ),
    ],
)
def test_plus_prompts_exact(kwargs, expected):
    assert build_prompt("plus", **kwargs) == expected


def test_plus_prefix_text_continues_the_assistant_turn():
    prompt = build_prompt("plus", speakers=True, prefix_text="[Speaker 1]: hello")
    assert prompt.endswith("<|start_of_role|>assistant<|end_of_role|>[Speaker 1]: hello")
    assert prompt.count("<|audio|>") == 1


def test_nar_prompt_is_the_bare_audio_prefix():
    assert build_prompt("nar") == "<|audio|>"
    assert build_prompt("nar", language="pt", punctuated=False) == "<|audio|>"


@pytest.mark.parametrize(
    ("variant", "kwargs", "message"),
    [
        ("nar", {"task": "translate", "target_language": "en"}, "cannot translate"),
        ("plus", {"task": "translate", "target_language": "en"}, "cannot translate"),
        ("nar", {"language": "ja"}, "cannot transcribe Japanese"),
        ("plus", {"language": "ja"}, "cannot transcribe Japanese"),
        ("ar", {"language": "it"}, "cannot transcribe Italian"),
        ("ar", {"speakers": True}, "need the 'plus' variant"),
        ("nar", {"timestamps": True}, "need the 'plus' variant"),
        ("plus", {"speakers": True, "timestamps": True}, "one at a time"),
        ("ar", {"language": "klingon"}, "unknown language 'klingon'"),
        ("ar", {"task": "translate"}, "needs target_language"),
        ("ar", {"task": "translate", "target_language": "ko"}, "unknown language"),
        ("ar", {"task": "translate", "language": "en", "target_language": "en"}, "cannot translate en->en"),
        ("ar", {"task": "translate", "language": "fr", "target_language": "de"}, "cannot translate fr->de"),
        ("ar", {"task": "summarise"}, "unknown task"),
        ("ar", {"target_language": "fr"}, "only for task 'translate'"),
        ("nar", {"keywords": ["x"]}, "no keyword biasing"),
        ("nar", {"prefix_text": "x"}, "no prefix_text"),
        ("big", {}, "unknown variant"),
    ],
)
def test_validation_errors(variant, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_prompt(variant, **kwargs)


def test_validate_task_accepts_what_each_variant_can_do():
    validate_task("ar", "transcribe", "ja")
    validate_task("ar", "translate", "en", "zh")
    validate_task("ar", "translate", "Portuguese", "English")
    validate_task("plus", "transcribe", "de", speakers=True)
    validate_task("nar", "transcribe", "EN")
    assert canonical_language("Mandarin") == "zh" and canonical_language("fra") == "fr"


def test_expand_audio_tokens():
    assert expand_audio_tokens("a<|audio|>b", 3) == "a<|audio|><|audio|><|audio|>b"
    assert expand_audio_tokens("<|audio|>", 0) == ""
    with pytest.raises(ValueError, match="exactly one"):
        expand_audio_tokens("no audio", 2)
    with pytest.raises(ValueError, match="exactly one"):
        expand_audio_tokens("<|audio|><|audio|>", 2)


def test_encode_prompts_left_pads_and_counts_audio_tokens():
    tok = make_tokenizer()
    geometry = FrameGeometry.from_config(preset("2b"))
    counts = [geometry.audio_tokens_for_samples(176000), geometry.audio_tokens_for_samples(16000)]
    assert counts == [111, 12]  # SPEC §12 JFK: 550 frames → 111 tokens; 1 s → 50 frames → 4 windows
    prompts = [build_prompt("ar"), build_prompt("ar", punctuated=False)]
    ids, mask = encode_prompts(tok, prompts, counts)
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape
    for b, n in enumerate(counts):
        row = ids[b][mask[b].bool()].tolist()
        assert row == tok.encode(expand_audio_tokens(prompts[b], n))
        assert row.count(tok.audio_token_id) == n
        pad = int((mask[b] == 0).sum())
        assert mask[b, pad:].all() and not mask[b, :pad].any()  # left padding
        assert (ids[b, :pad] == tok.pad_id).all()
    assert int(mask[0].sum()) == ids.shape[1]  # the longest row is unpadded


def test_encode_prompts_checks_counts():
    tok = make_tokenizer()
    with pytest.raises(ValueError, match="audio token counts"):
        encode_prompts(tok, ["<|audio|>"], [1, 2])


def test_tokenizer_no_bos_specials_and_save(tmp_path):
    tok = make_tokenizer()
    ids = tok.encode(build_prompt("plus"))
    assert ids[0] == tok.token_to_id("<|start_of_role|>")  # no BOS prepended (SPEC §5.5)
    assert tok.audio_token_id in ids and tok.eos_id in ids
    assert tok.decode(ids).startswith("system")
    assert tok.decode(ids, skip_special_tokens=False) == build_prompt("plus")
    assert (tok.eos_id, tok.pad_id, tok.audio_token_id) == (0, 1, 4)
    assert tok.id_to_token(4) == "<|audio|>"
    tok.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    assert again.encode("hello world <|audio|>") == tok.encode("hello world <|audio|>")
    assert again.vocab_size == tok.vocab_size and again.pad_id == 1
    assert Tokenizer.from_dir(tmp_path / "empty") is None


def test_time_tag_token_ids_cover_the_tags_and_no_words():
    tok = make_tokenizer()
    tags = set(time_tag_token_ids(tok))
    for text in (" [T:1234]", " [T:5]", "[T:999] ", " [T:0]"):
        assert set(tok.encode(text)) <= tags, text
    words = tok.encode(" the cat sat on a mat, or not")  # its letters (a bare space spells tags too)
    assert not tags & {i for i in words if tok.decode([i]).strip()} and tok.encode(" 12")[-1] in tags
    assert tok.eos_id not in tags and tok.audio_token_id not in tags
