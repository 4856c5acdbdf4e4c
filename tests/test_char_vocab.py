from granite_asr import char_vocab


def test_layout_matches_spec():
    assert char_vocab.encode(" A~") == [32, 65, 126]
    assert char_vocab.encode("é") == [233]
    assert char_vocab.encode("ァ") == [256] and char_vocab.encode("ー") == [347]
    assert char_vocab.encode("あ") == char_vocab.encode("ア")  # hiragana folds to katakana
    assert char_vocab.encode("漢\n") == []  # unspellable characters are dropped


def test_round_trip():
    text = "Ça coûte 5 € ? コンニチハ"
    ids = char_vocab.encode(text)
    assert all(1 <= i < char_vocab.SIZE for i in ids)
    assert char_vocab.decode(ids) == "Ça coûte 5  ? コンニチハ"
