#!/usr/bin/env python3
"""Trains the embedded default model's tokenizer: GPT-2 byte-level BPE, written in Phi-2's file format.

    python3 src/Phi2Native/Embedded/make_tokenizer.py [--vocab-size 512]

Reads kjv-genesis-exodus.txt beside this script and writes, beside it:

    vocab.json          token (GPT-2's byte-level spelling, "Ġthe" for " the") -> id
    merges.txt          "#version: 0.2", then one merge per line in rank order
    added_tokens.json   the tokens matched whole before BPE, as Phi-2's folder has them

Ids: 0..255 are the single bytes in GPT-2's order (vocab.json of GPT-2 starts the same way), then one id per
merge in rank order, then <|endoftext|>, then the two whole tokens "  " (two spaces) and "\\t\\t" (two tabs).
Phi-2's tokenizer (Microsoft.ML.Tokenizers' Phi2Tokenizer) has built-in tokens for runs of spaces and tabs at
Phi-2's ids 50257..50294; a vocabulary numbered otherwise must bring its own tokens for two spaces and two tabs
(TextTokenizer checks this), so added_tokens.json gives them ids of this vocabulary. The text holds no such runs,
so the two ids never occur in training; they exist so that any text, code included, tokenizes.

Training is the classic algorithm (Sennrich et al.; GPT-2's byte-level variant): the text is split into words
with GPT-2's pre-tokenizer pattern, and the most frequent adjacent pair of symbols inside words is merged, again
and again, until the vocabulary is full. Ties go to the pair that sorts first, so the output is deterministic.
Python 3 standard library only; about a second for the committed 253 merges.
"""
import argparse
import collections
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).parent
TEXT = HERE / "kjv-genesis-exodus.txt"
END_OF_TEXT = "<|endoftext|>"
WHOLE_TOKENS = ["  ", "\t\t"]

# GPT-2's pre-tokenizer, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+, in Python's
# re syntax: [^\W\d_] is a letter, \d a digit, and (?:[^\s\w]|_) anything else that is not whitespace. It splits
# this ASCII text exactly as the original does.
PRE_TOKENIZER = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def bytes_to_unicode() -> tuple[list[str], list[int]]:
    """GPT-2's map from each byte to a printable character (encoder.py): id b's token is this list's b-th entry
    in GPT-2's order, which puts the printable bytes first."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    order, chars = printable[:], printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars], order


def train(words: collections.Counter, merges_wanted: int) -> list[tuple[str, str]]:
    """The first merges_wanted merges of byte-level BPE over word frequencies; words are tuples of symbols."""
    symbols = {word: list(word) for word in words}
    pair_counts: collections.Counter = collections.Counter()
    where: dict[tuple[str, str], set] = collections.defaultdict(set)  # pair -> the words that hold it
    for word, count in words.items():
        parts = symbols[word]
        for pair in zip(parts, parts[1:]):
            pair_counts[pair] += count
            where[pair].add(word)

    merges = []
    while len(merges) < merges_wanted:
        best = min((p for p, c in pair_counts.items() if c > 0), key=lambda p: (-pair_counts[p], p), default=None)
        if best is None:
            raise SystemExit(f"the text only supports {len(merges)} merges; choose a smaller --vocab-size")
        merges.append(best)
        joined = best[0] + best[1]
        for word in list(where[best]):
            parts, count = symbols[word], words[word]
            for pair in zip(parts, parts[1:]):  # take the word's old pairs out, then put its new ones in
                pair_counts[pair] -= count
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            symbols[word] = merged
            for pair in zip(merged, merged[1:]):
                pair_counts[pair] += count
                where[pair].add(word)
        del pair_counts[best], where[best]
    return merges


def encode_word(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE of one pre-token (already in byte-level spelling): merge the lowest-ranked pair until none applies."""
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=512,
                        help="ids in all: 256 bytes + merges + <|endoftext|> + the two whole tokens (default 512, the committed files)")
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="folder to write the three files to")
    args = parser.parse_args()
    merges_wanted = args.vocab_size - 256 - 1 - len(WHOLE_TOKENS)
    if merges_wanted < 0:
        raise SystemExit(f"--vocab-size must be at least {256 + 1 + len(WHOLE_TOKENS)}")

    text = TEXT.read_text(encoding="utf-8")
    byte_chars, byte_order = bytes_to_unicode()
    char_of = {b: byte_chars[i] for i, b in enumerate(byte_order)}
    spell = lambda piece: "".join(char_of[b] for b in piece.encode("utf-8"))
    words = collections.Counter(spell(w) for w in PRE_TOKENIZER.findall(text))
    merges = train(words, merges_wanted)

    vocab = {char: i for i, char in enumerate(byte_chars)}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab[END_OF_TEXT] = len(vocab)
    added = {token: len(vocab) + i for i, token in enumerate(WHOLE_TOKENS)}

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "vocab.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    with open(args.out / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{left} {right}\n" for left, right in merges)
    with open(args.out / "added_tokens.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(added, f, ensure_ascii=True, indent=2)
        f.write("\n")

    ranks = {pair: i for i, pair in enumerate(merges)}
    tokens = sum(count * len(encode_word(word, ranks)) for word, count in words.items())
    print(f"vocab {args.vocab_size} ({len(merges)} merges): {tokens} tokens for {len(text)} bytes, "
          f"{len(text) / tokens:.2f} bytes per token; longest tokens: "
          f"{sorted((t for t in vocab if t != END_OF_TEXT), key=len)[-5:]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
