#!/usr/bin/env python3
"""make_bpe_fixture.py - the token ids Hugging Face's tokenizers library gives for a tokenizer.json
written by `lumen bpe-train`, for tests/test_bpe_train.c.

usage: python tools/make_bpe_fixture.py TOKENIZER_JSON [OUT_JSON]

Loads TOKENIZER_JSON with tokenizers.Tokenizer.from_file and writes OUT_JSON (default
tests/fixtures/bpe_train/expected_ids.json):

  {"tokenizer": "tokenizer.json", "tokenizers_version": ..., "vocab_size": N,
   "cases": [{"text": ..., "ids": [...]}, ...]}

The committed fixture was made from the tokenizer that

  lumen bpe-train ../shared/assets/text/cs336_tinystories_sample.txt \\
      ../shared/assets/text/cs336_address.txt --vocab-size 512 \\
      -o tests/fixtures/bpe_train/tokenizer.json

wrote (it is committed beside it; the C test retrains and checks the bytes are the same).
Needs the `tokenizers` package from PyPI (any recent release; 0.23 made the committed file).
"""
import json
import os
import sys

from tokenizers import Tokenizer, __version__ as tokenizers_version

# Plain text, text unlike the training corpus, Unicode in several scripts, whitespace runs of
# every kind, numbers, newlines, contractions, and the special token alone, inside text and
# twice in a row.
CASES = [
    "",
    "Once upon a time there was a little boy named Ben.",
    "Four score and seven years ago our fathers brought forth",
    "Hello, world!",
    "the the the theme thermometer",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces",
    "trailing spaces   ",
    "a  b   c    d",
    "tabs\tand\t\tmore\ttabs",
    "line one\nline two\n\nline four\n",
    "\n\n\n",
    "windows\r\nline ends\r\n",
    "numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10",
    "2024-06-01 12:34:56",
    "I'm sure you'll see they've done it, haven't they? I'd say we're fine.",
    "SHOUTING 'S 'T 'RE",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "emoji \U0001F600\U0001F680 and \u2764\ufe0f",
    "non\u00a0breaking\u2003em space\u3000ideographic",
    "combining e\u0301 and a\u0308",
    "math: \u2211 x\u00b2 \u2264 \u221e",
    "<|endoftext|>",
    "The end.<|endoftext|>Once upon a time",
    "<|endoftext|><|endoftext|> twice",
    "a <|endoftext|> between spaces",
    "<|endoftext",
    "punctuation!!! ??? ... ,,, ;;; --- ***",
    "mixed123abc 456def ghi789",
    "https://example.com/path?q=1&r=2#frag",
]


def main():
    if len(sys.argv) not in (2, 3):
        sys.stderr.write(__doc__)
        sys.exit(2)
    tok_path = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.join(here, "..", "tests", "fixtures", "bpe_train",
                                                                "expected_ids.json")
    tok = Tokenizer.from_file(tok_path)
    cases = [{"text": text, "ids": tok.encode(text).ids} for text in CASES]
    # The ids must spell the text back: a check of the fixture itself.
    for c in cases:
        back = tok.decode(c["ids"], skip_special_tokens=False)
        if back != c["text"]:
            sys.exit(f"round trip failed for {c['text']!r}: {back!r}")
    head = {
        "tokenizer": os.path.basename(tok_path),
        "tokenizers_version": tokenizers_version,
        "vocab_size": tok.get_vocab_size(),
    }
    # One case a line, so that a change shows as a readable diff.
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append('  "cases": [')
    lines.append(",\n".join("    " + json.dumps(c, ensure_ascii=True) for c in cases))
    lines.append("  ]")
    lines.append("}")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(tmp, encoding="utf-8"))  # well-formed
    os.replace(tmp, out)
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
