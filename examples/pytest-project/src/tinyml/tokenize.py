"""A whitespace-and-punctuation tokenizer."""

import re

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text):
    """Lower-cased word and punctuation tokens of `text`."""
    return [t.lower() for t in _TOKEN.findall(text)]
