"""N-gram LM: Kneser-Ney ARPA with kaldingram, perplexity, and G.fst with kaldilm."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from pathlib import Path

import kaldilm
from kaldingram import train as kaldingram_train

from asrkd.data import read_table
from asrkd.lang import UNK, read_symbols
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file, write_list

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
    """A back-off n-gram model: log10 probabilities and back-off weights keyed by n-gram."""

    def __init__(self, prob: dict[tuple[str, ...], float], bow: dict[tuple[str, ...], float]):
        self.prob, self.bow = prob, bow
        self.order = max(len(ng) for ng in prob)
        self.vocab = {ng[0] for ng in prob if len(ng) == 1}

    @classmethod
    def read(cls, path: str | Path) -> ArpaLM:
        prob: dict[tuple[str, ...], float] = {}
        bow: dict[tuple[str, ...], float] = {}
        section = 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:-7])
                    continue
                parts = line.split()
                if section == 0 or len(parts) not in (section + 1, section + 2):
                    raise AsrkdError(f"{path}:{n}: malformed ARPA line")
                ngram = tuple(parts[1:section + 1])
                prob[ngram] = float(parts[0])
                if len(parts) == section + 2:
                    bow[ngram] = float(parts[-1])
        if not prob:
            raise AsrkdError(f"{path}: no n-grams found")
        return cls(prob, bow)

    @classmethod
    def unigram(cls, sentences: list[str]) -> ArpaLM:
        """Maximum-likelihood unigram over the words and </s> (kaldingram's order 1 drops words)."""
        counts = Counter(w for s in sentences for w in s.split() + ["</s>"])
        total = sum(counts.values())
        return cls({("<s>",): -99.0, **{(w,): math.log10(c / total) for w, c in counts.items()}}, {})

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

    def fix_backoff_weights(self) -> list[tuple[str, ...]]:
        """Recompute each context's back-off weight so its distribution sums to one (SRILM's
        rule). A context followed by every word leaves no mass to back off to: its seen
        probabilities are renormalised and it gets no weight. kaldingram writes a weight of about
        1e13 there (a rounding residue divided by ~0), a negative-cost loop in G. Returns the
        contexts whose weight changed by more than 1e-4 (log10)."""
        successors: dict[tuple[str, ...], list[str]] = {}
        for ngram in self.prob:
            if len(ngram) > 1:
                successors.setdefault(ngram[:-1], []).append(ngram[-1])
        changed = []
        for h in sorted(successors, key=len):
            seen = [h + (w,) for w in successors[h]]
            left = 1.0 - sum(10 ** self.prob[ng] for ng in seen)
            lower_left = 1.0 - sum(10 ** self.logprob(ng[-1], h[1:]) for ng in seen)
            old = self.bow.pop(h, 0.0)
            if lower_left < 1e-6 or left <= 0.0:
                for ng in seen:
                    self.prob[ng] -= math.log10(1.0 - left)
                new = 0.0
            else:
                new = self.bow[h] = math.log10(left / lower_left)
            if abs(new - old) > 1e-4:
                changed.append(h)
        return changed

    def write(self, path: str | Path) -> None:
        """Write the model as an ARPA file."""
        by_order: dict[int, list[tuple[str, ...]]] = {}
        for ngram in self.prob:
            by_order.setdefault(len(ngram), []).append(ngram)
        with atomic_file(path) as f:
            f.write("\\data\\\n")
            for n in sorted(by_order):
                f.write(f"ngram {n}={len(by_order[n])}\n")
            for n in sorted(by_order):
                f.write(f"\n\\{n}-grams:\n")
                for ngram in by_order[n]:
                    bow = f"\t{self.bow[ngram]:.7f}" if ngram in self.bow else ""
                    f.write(f"{self.prob[ngram]:.7f}\t{' '.join(ngram)}{bow}\n")
            f.write("\n\\end\\\n")

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
    """Train a Kneser-Ney n-gram (order 1: maximum likelihood) on the training transcripts
    (OOVs as <UNK>); report dev perplexity."""
    lm_dir = Path(lm_dir)
    lm_dir.mkdir(parents=True, exist_ok=True)
    words = read_symbols(Path(lang_dir) / "words.txt")
    sentences, mapped = lm_sentences(train_text, words)
    write_list(lm_dir / "lm_train.txt", sentences)
    arpa = lm_dir / f"lm_{order}gram.arpa"
    tmp = arpa.with_name(arpa.name + ".tmp")
    if order == 1:
        lm, fixed = ArpaLM.unigram(sentences), []
        lm.write(arpa)
    else:
        kaldingram_train.main(["--ngram-order", str(order), "--text", str(lm_dir / "lm_train.txt"),
                               "--lm", str(tmp)])
        lm = ArpaLM.read(tmp)
        fixed = lm.fix_backoff_weights()
        if fixed:
            log.info("%s: recomputed %d back-off weights (e.g. after %s)", arpa, len(fixed), " ".join(fixed[0]))
            lm.write(tmp)
        tmp.rename(arpa)
    report = {"arpa": str(arpa), "order": order, "train_sentences": len(sentences), "train_oov_mapped": mapped,
              "backoff_weights_fixed": len(fixed)}
    report["train"] = lm.perplexity(sentences)
    if dev_text is not None:
        report["dev"] = lm.perplexity(lm_sentences(dev_text, words)[0])
        log.info("%d-gram LM: dev perplexity %.1f (%d sentences, %d OOVs)", order,
                 report["dev"]["ppl"], report["dev"]["sentences"], report["dev"]["oovs"])
    with atomic_file(lm_dir / "report.json") as f:
        json.dump(report, f, indent=2)
    return report


def make_lang_test(lang_dir: str | Path, arpa: str | Path, out_dir: str | Path | Output) -> None:
    """Copy the lang dir and add G.fst (kaldilm arpa2fst, #0 on back-off arcs, <s>/</s> as eps)."""
    out = out_dir if isinstance(out_dir, Output) else Output(out_dir, "train-lm", {}, {"arpa": arpa})
    with out.writing() as d:
        shutil.copytree(lang_dir, d, dirs_exist_ok=True)
        kaldilm.arpa2fst(input_arpa=str(arpa), output_fst=str(d / "G.fst"), disambig_symbol="#0",
                         read_symbol_table=str(Path(lang_dir) / "words.txt"))
    log.info("%s: G.fst from %s", out.path, arpa)
