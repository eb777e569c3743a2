"""N-gram LM: Kneser-Ney ARPA with kaldingram, perplexity, and G.fst with kaldilm."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import kaldilm
from kaldingram import train as kaldingram_train

from asrkd.data import read_table
from asrkd.lang import UNK, read_symbols
from asrkd.utils import AsrkdError, atomic_dir, atomic_file, write_list

log = logging.getLogger(__name__)


def lm_sentences(text_path: str | Path, words: dict[str, int]) -> tuple[list[str], int]:
    """Transcripts with words outside `words` mapped to <UNK>; returns (sentences, #mapped)."""
    out, mapped = [], 0
    for utt_words in read_table(text_path).values():
        toks = []
        for w in utt_words.split():
            if w not in words:
                w, mapped = UNK, mapped + 1
            toks.append(w)
        out.append(" ".join(toks))
    return out, mapped


class ArpaLM:
    """A back-off n-gram model read from an ARPA file (log10 probabilities)."""

    def __init__(self, path: str | Path):
        self.prob: dict[tuple[str, ...], float] = {}
        self.bow: dict[tuple[str, ...], float] = {}
        self.order, section = 0, 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:-7])
                    self.order = max(self.order, section)
                    continue
                parts = line.split()
                if section == 0 or len(parts) not in (section + 1, section + 2):
                    raise AsrkdError(f"{path}:{n}: malformed ARPA line")
                ngram = tuple(parts[1:section + 1])
                self.prob[ngram] = float(parts[0])
                if len(parts) == section + 2:
                    self.bow[ngram] = float(parts[-1])
        if not self.prob:
            raise AsrkdError(f"{path}: no n-grams found")
        self.vocab = {ng[0] for ng in self.prob if len(ng) == 1}

    def logprob(self, word: str, history: tuple[str, ...]) -> float:
        """log10 p(word | history) with Katz-style back-off."""
        history = history[len(history) - self.order + 1:] if self.order > 1 else ()
        backoff = 0.0
        while True:
            p = self.prob.get(history + (word,))
            if p is not None:
                return backoff + p
            if not history:
                return -math.inf
            backoff += self.bow.get(history, 0.0)
            history = history[1:]

    def perplexity(self, sentences: list[str]) -> dict:
        """SRILM-style: OOV words are skipped and counted; </s> counts as a token."""
        logprob, tokens, oovs, nwords = 0.0, 0, 0, 0
        for s in sentences:
            history: tuple[str, ...] = ("<s>",)
            for w in s.split() + ["</s>"]:
                nwords += w != "</s>"
                if w not in self.vocab:
                    oovs, history = oovs + 1, ("<s>",)
                    continue
                logprob += self.logprob(w, history)
                tokens += 1
                history = history + (w,)
        return {"sentences": len(sentences), "words": nwords, "oovs": oovs, "logprob": logprob,
                "ppl": 10 ** (-logprob / max(tokens, 1))}


def train_lm(train_text: str | Path, lang_dir: str | Path, lm_dir: str | Path, order: int = 3,
             dev_text: str | Path | None = None) -> dict:
    """Train a Kneser-Ney n-gram on the training transcripts (OOVs as <UNK>); report dev perplexity."""
    lm_dir = Path(lm_dir)
    lm_dir.mkdir(parents=True, exist_ok=True)
    words = read_symbols(Path(lang_dir) / "words.txt")
    sentences, mapped = lm_sentences(train_text, words)
    write_list(lm_dir / "lm_train.txt", sentences)
    arpa = lm_dir / f"lm_{order}gram.arpa"
    tmp = arpa.with_name(arpa.name + ".tmp")
    kaldingram_train.main(["--ngram-order", str(order), "--text", str(lm_dir / "lm_train.txt"), "--lm", str(tmp)])
    tmp.rename(arpa)
    report = {"arpa": str(arpa), "order": order, "train_sentences": len(sentences), "train_oov_mapped": mapped}
    lm = ArpaLM(arpa)
    report["train"] = lm.perplexity(sentences)
    if dev_text is not None:
        report["dev"] = lm.perplexity(lm_sentences(dev_text, words)[0])
        log.info("%d-gram LM: dev perplexity %.1f (%d sentences, %d OOVs)", order,
                 report["dev"]["ppl"], report["dev"]["sentences"], report["dev"]["oovs"])
    with atomic_file(lm_dir / "report.json") as f:
        json.dump(report, f, indent=2)
    return report


def make_lang_test(lang_dir: str | Path, arpa: str | Path, out_dir: str | Path) -> None:
    """Copy the lang dir and add G.fst (kaldilm arpa2fst, #0 on back-off arcs, <s>/</s> as eps)."""
    with atomic_dir(out_dir) as d:
        shutil.copytree(lang_dir, d, dirs_exist_ok=True)
        kaldilm.arpa2fst(input_arpa=str(arpa), output_fst=str(d / "G.fst"), disambig_symbol="#0",
                         read_symbol_table=str(Path(lang_dir) / "words.txt"))
    log.info("%s: G.fst from %s", out_dir, arpa)
