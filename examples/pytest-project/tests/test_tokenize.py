from tinyml import tokenize


def test_words_and_punctuation():
    assert tokenize("Hello, world!") == ["hello", ",", "world", "!"]


def test_unicode_words():
    assert tokenize("Grüße aus Köln") == ["grüße", "aus", "köln"]


def test_empty_text():
    assert tokenize("   ") == []
