#!/usr/bin/env python3
"""Writes kjv-genesis-exodus.txt, the text of the embedded default model, from Debian's King James Bible.

    apt-get install -y bible-kjv-text      # also installs bible-kjv, whose `bible` command reads the text
    python3 src/Phi2Native/Embedded/make_text.py

The output is Genesis 1:1 through Exodus 40:38, cleaned for training: one chapter per paragraph (paragraphs
separated by one blank line), each opening with its heading ("Genesis 1") on a line of its own and then one
verse per line without its verse number. The verse numbers are dropped because a model trained for a minute
would spend much of its capacity on counting; the headings stay because they are few and make a generated
passage recognizable. The text is plain ASCII already; the script checks that, and that every chapter's
verses are numbered 1, 2, 3, ... so that nothing was lost in the parse. Python 3 standard library only.
"""
import pathlib
import re
import subprocess
import sys

OUT = pathlib.Path(__file__).with_name("kjv-genesis-exodus.txt")
BOOKS = {"Genesis": 50, "Exodus": 40}  # chapters per book, checked below


def main() -> int:
    # -l with a huge width: one verse per output line (the default wraps at the terminal's width).
    raw = subprocess.run(["bible", "-l1000000", "gen1:1-ex40:38"], check=True, capture_output=True, text=True).stdout
    chapters: list[tuple[str, list[str]]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        heading = re.fullmatch(r"(Genesis|Exodus) (\d+)", line)
        if heading:
            chapters.append((line, []))
            continue
        verse = re.fullmatch(r"  (\d+) (\S.*\S|\S)", line)
        if not verse or not chapters:
            raise SystemExit(f"unexpected line from `bible`: {line!r}")
        number, text = int(verse.group(1)), verse.group(2)
        verses = chapters[-1][1]
        if number != len(verses) + 1:
            raise SystemExit(f"{chapters[-1][0]}: verse {number} follows verse {len(verses)}")
        verses.append(re.sub(r" {2,}", " ", text))

    counts = {book: sum(1 for h, _ in chapters if h.startswith(book + " ")) for book in BOOKS}
    if counts != BOOKS:
        raise SystemExit(f"expected chapters {BOOKS}, got {counts}")
    text = "\n\n".join(heading + "\n" + "\n".join(verses) for heading, verses in chapters) + "\n"
    if not text.isascii():
        raise SystemExit("the text holds non-ASCII characters; check the cleaning")
    OUT.write_text(text, encoding="ascii", newline="\n")
    print(f"{OUT.name}: {len(chapters)} chapters, {sum(len(v) for _, v in chapters)} verses, {len(text)} bytes",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
