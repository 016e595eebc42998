#!/usr/bin/env python3
"""make_calendar.py - generated calendar sentences for training and evaluating the shipped
model: "Three days from Monday is Thursday.", "Five months from October is March.", ...

Standard library only (`make model` runs it on a fresh machine). Deterministic: the
shuffles use a small splitmix64 generator written out here, so the files are identical
on every machine and Python version. Writes, into --out (default data/ in the repository
root):

  calendar_train.txt    training sentences, one per line, shuffled; each training
                        sentence repeated (weekday ones WEEKDAY_REPEAT times, month ones
                        MONTH_REPEAT times) plus rotated lists of the week and the year
  calendar_heldout.txt  the held-out sentences, one per line, each once
  calendar_eval.json    the held-out sentences as prompts: a JSON array of
                        {"prompt", "answer", "kind", "choices", "template", "start",
                        "offset"}; the prompt is the sentence up to the answer (no
                        trailing space) and the answer is the word that follows it

Design. A fact is a pair (start, offset): weekdays Monday..Sunday with offsets one..six
(42 pairs), months January..December with offsets one..eleven (132 pairs). Each fact is
said with each of six templates per kind, so there are 42 * 6 + 132 * 6 = 1044
(template, start, offset) triples. Held out: for every fact one template, and for a
fifth of the facts a second one (about 20% of all triples); the held-out templates are
spread evenly over the templates. So every fact is in training under at least four
templates and in the held-out set under one or two others: a model can answer a
held-out prompt only by carrying a fact it learned from other phrasings over to a new
one, not by copying a sentence it saw.

Usage: python3 tools/make_calendar.py [--out DIR] [--seed N]
"""

import argparse
import json
import os

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]

# {N}: the offset capitalised ("Three"), {n}: lower case, {u}: "day"/"days" or
# "month"/"months", {S}: the start, {A}: the answer. Every template ends with " {A}.".
TEMPLATES = {
    "weekday": [
        "{N} {u} from {S} is {A}.",
        "{S} plus {n} {u} is {A}.",
        "If today is {S}, then in {n} {u} it will be {A}.",
        "{N} {u} after {S} comes {A}.",
        "Counting {n} {u} forward from {S} gives {A}.",
        "What day is {n} {u} after {S}? It is {A}.",
    ],
    "month": [
        "{N} {u} from {S} is {A}.",
        "{S} plus {n} {u} is {A}.",
        "If this month is {S}, then in {n} {u} it will be {A}.",
        "{N} {u} after {S} comes {A}.",
        "Counting {n} {u} forward from {S} gives {A}.",
        "What month is {n} {u} after {S}? It is {A}.",
    ],
}
NAMES = {"weekday": WEEKDAYS, "month": MONTHS}
UNIT = {"weekday": ("day", "days"), "month": ("month", "months")}

# Repeats of each training sentence in calendar_train.txt. Weekday facts are fewer (42
# against 132), so they are repeated more: about half the lines are about weekdays.
WEEKDAY_REPEAT = 25
MONTH_REPEAT = 8
# Repeats of each rotated list ("Wednesday, Thursday, ..., Tuesday."), one per start.
LIST_REPEAT = 20


class SplitMix64:
    """Sebastiano Vigna's splitmix64: tiny, and the same on every Python."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        """Uniform in [0, n) by rejection (no modulo bias)."""
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self.next()
            if x < limit:
                return x % n

    def shuffle(self, xs):
        """Fisher-Yates, in place."""
        for i in range(len(xs) - 1, 0, -1):
            j = self.below(i + 1)
            xs[i], xs[j] = xs[j], xs[i]


def sentence(kind, template, start, offset):
    """(full sentence, prompt, answer) for one triple."""
    names = UNIT[kind]
    n = NUMBERS[offset]
    answer = NAMES[kind][(start + offset) % len(NAMES[kind])]
    text = TEMPLATES[kind][template].format(
        N=n.capitalize(),
        n=n,
        u=names[0] if offset == 1 else names[1],
        S=NAMES[kind][start],
        A=answer,
    )
    tail = " " + answer + "."
    assert text.endswith(tail)
    return text, text[: -len(tail)], answer


def split(kind, rng):
    """Held-out template indices per (start, offset) fact: one for every fact, a second
    for a fifth of them; both cycle through the templates so each is held out about
    equally often."""
    names, ntpl = NAMES[kind], len(TEMPLATES[kind])
    facts = [(s, o) for s in range(len(names)) for o in range(1, len(names))]
    order = list(facts)
    rng.shuffle(order)
    second = round(len(facts) / 5)
    held = {}
    for i, fact in enumerate(order):
        h = {i % ntpl}
        if i < second:
            h.add((i + ntpl // 2) % ntpl)
        held[fact] = h
    return facts, held


def rotated_lists(kind):
    names = NAMES[kind]
    out = []
    for s in range(len(names)):
        seq = [names[(s + k) % len(names)] for k in range(len(names))]
        out.append(", ".join(seq[:-1]) + " and " + seq[-1] + ".")
    return out


def build(seed):
    rng = SplitMix64(seed)
    train, heldout, evals = [], [], []
    counts = {}
    for kind, repeat in (("weekday", WEEKDAY_REPEAT), ("month", MONTH_REPEAT)):
        facts, held = split(kind, rng)
        ntrain = nheld = 0
        for start, offset in facts:
            train_tpls = [t for t in range(len(TEMPLATES[kind])) if t not in held[(start, offset)]]
            assert len(train_tpls) >= 2
            for t in range(len(TEMPLATES[kind])):
                text, prompt, answer = sentence(kind, t, start, offset)
                if t in held[(start, offset)]:
                    heldout.append(text)
                    evals.append(
                        {
                            "prompt": prompt,
                            "answer": answer,
                            "kind": kind,
                            "choices": NAMES[kind],
                            "template": t,
                            "start": NAMES[kind][start],
                            "offset": offset,
                        }
                    )
                    nheld += 1
                else:
                    train.extend([text] * repeat)
                    ntrain += 1
        for line in rotated_lists(kind):
            train.extend([line] * LIST_REPEAT)
        counts[kind] = (len(facts), ntrain, nheld)
    rng.shuffle(train)
    return train, heldout, evals, counts


def write_atomic(path, text):
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def eval_json(evals):
    # One object per line: readable, diffable, and still one JSON array.
    rows = [json.dumps(e, ensure_ascii=True, separators=(", ", ": ")) for e in evals]
    return "[\n" + ",\n".join(rows) + "\n]\n"


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(repo, "data"))
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()

    train, heldout, evals, counts = build(args.seed)
    held_set = set(heldout)
    assert not held_set & set(train), "a held-out sentence is in the training set"
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "calendar_train.txt"), "\n".join(train) + "\n")
    write_atomic(os.path.join(args.out, "calendar_heldout.txt"), "\n".join(heldout) + "\n")
    write_atomic(os.path.join(args.out, "calendar_eval.json"), eval_json(evals))
    for kind, (nfacts, ntrain, nheld) in counts.items():
        print(
            "%s: %d facts, %d training triples, %d held out (%.1f%%)"
            % (kind, nfacts, ntrain, nheld, 100.0 * nheld / (ntrain + nheld))
        )
    print("calendar_train.txt: %d lines; calendar_heldout.txt: %d lines" % (len(train), len(heldout)))


if __name__ == "__main__":
    main()
