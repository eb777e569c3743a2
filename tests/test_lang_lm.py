"""Lexicon, lang dir and L.fst; Kneser-Ney ARPA, perplexity and G.fst on the real transcripts."""

import math

import kaldifst
import numpy as np
import pytest

from asrkd.lang import build_lexicon, prepare_lang, read_symbols
from asrkd.lm import ArpaLM, lm_sentences, make_lang_test, train_lm
from asrkd.data import write_table
from conftest import SO762, run_script

LEXICON = SO762 / "resource" / "lexicon.txt"


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    d = tmp_path_factory.mktemp("lang")
    extra = d / "extra_text"
    write_table(extra, {"u1": "ZEBRA ABOUT", "u2": "QWXZYQ ABOUT QWXZYQ"})
    lexicon, oov = build_lexicon(LEXICON, [SO762 / "train" / "text", extra])
    prepare_lang(lexicon, d / "lang", oov_counts=oov)
    return d / "lang", oov


def phones_to_words(L, phone_ids):
    """Compose a phone string with L (input side) and read the best path's words."""
    L = L.copy()
    kaldifst.arcsort(L, sort_type="ilabel")
    composed = kaldifst.compose(kaldifst.make_linear_acceptor(phone_ids), L)
    if composed.num_states == 0:
        return None
    ok, _, words, _ = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(composed))
    assert ok
    return [w for w in words if w != 0]


def test_phone_set_and_tables(lang):
    lang_dir, oov = lang
    phones = read_symbols(lang_dir / "phones.txt")
    nonsil = (lang_dir / "phones" / "nonsilence.txt").read_text().split()
    assert len(nonsil) == 39 and "AH" in nonsil and "AH0" not in nonsil
    assert list(phones)[:3] == ["<eps>", "SIL", "SPN"] and "#0" in phones
    words = read_symbols(lang_dir / "words.txt")
    assert {"<UNK>", "!SIL", "#0", "<s>", "</s>", "ZEBRA"} <= set(words)
    assert oov == {"QWXZYQ": 2} and "QWXZYQ" not in words
    assert (lang_dir / "oov_words.txt").read_text() == "QWXZYQ 2\n"
    topo = (lang_dir / "topo").read_text()
    assert topo.count("<TopologyEntry>") == 2 and "<State> 5 </State>" in topo


def test_lexicon_fst_accepts_words(lang):
    lang_dir, _ = lang
    phones, words = read_symbols(lang_dir / "phones.txt"), read_symbols(lang_dir / "words.txt")
    L = kaldifst.StdVectorFst.read(str(lang_dir / "L.fst"))
    about = [phones[p] for p in "AH B AW T".split()]
    zebra = [phones[p] for p in "Z IY B R AH".split()]  # from CMUdict (Z IY1 B R AH0)
    assert phones_to_words(L, about) == [words["ABOUT"]]
    assert phones_to_words(L, about + [phones["SIL"]] + zebra) == [words["ABOUT"], words["ZEBRA"]]
    assert phones_to_words(L, [phones["SIL"]] + about) == [words["ABOUT"]]
    assert phones_to_words(L, [phones[p] for p in "B B B".split()]) is None


def test_lexicon_disambiguation_symbols(lang):
    lang_dir, _ = lang
    entries = [line.split() for line in (lang_dir / "lexicon_disambig.txt").read_text().splitlines()]
    prons = {}
    for w, *p in entries:
        prons.setdefault(tuple(x for x in p if not x.startswith("#")), []).append(p[-1])
    # every pronunciation shared by several words gets distinct disambiguation symbols
    homophones = [ends for ends in prons.values() if len(ends) > 1]
    assert homophones and all(len(set(e)) == len(e) and all(x.startswith("#") for x in e) for e in homophones)
    Ld = kaldifst.StdVectorFst.read(str(lang_dir / "L_disambig.fst"))
    phones, words = read_symbols(lang_dir / "phones.txt"), read_symbols(lang_dir / "words.txt")
    loops = [a for s in range(Ld.num_states) for a in kaldifst.ArcIterator(Ld, s)
             if a.ilabel == phones["#0"] and a.olabel == words["#0"]]
    assert loops, "L_disambig.fst must pass G's #0 through"


def test_prepare_lang_cli_rejects_missing_lexicon(tmp_path):
    proc = run_script("prepare-lang", "--lexicon", str(tmp_path / "none.txt"), str(tmp_path / "lang"))
    assert proc.returncode != 0 and "none.txt" in proc.stderr


def test_trigram_lm_and_G(lang, tmp_path):
    lang_dir, _ = lang
    report = train_lm(SO762 / "train" / "text", lang_dir, tmp_path / "lm", order=3,
                      dev_text=SO762 / "dev" / "text")
    lm = ArpaLM.read(report["arpa"])
    assert lm.order == 3
    vocab = sorted(lm.vocab - {"<s>"})
    # every conditional distribution of the back-off model sums to one
    for history in [(), ("<s>",), ("THE",), ("<s>", "I"), ("I", "LIKE")]:
        total = sum(10 ** lm.logprob(w, history) for w in vocab)
        assert total == pytest.approx(1.0, abs=2e-3), history
    dev = report["dev"]
    assert math.isfinite(dev["ppl"]) and 5 < dev["ppl"] < 1000 and dev["ppl"] > report["train"]["ppl"]

    # our perplexity agrees with kaldingram's on sentences without OOVs (kaldingram drops a
    # sentence with an OOV entirely; we skip only the OOV word, as SRILM does)
    from kaldingram.ppl import compute_ppl
    from kaldingram.prune import ArpaParser

    words = read_symbols(lang_dir / "words.txt")
    sentences = lm_sentences(SO762 / "dev" / "text", words)[0]
    in_vocab = [s for s in sentences if set(s.split()) <= lm.vocab]
    assert 100 < len(in_vocab) < len(sentences)
    theirs = compute_ppl(ArpaParser().loadf(report["arpa"])[0], [s + "\n" for s in sentences])
    assert lm.perplexity(in_vocab)["ppl"] == pytest.approx(theirs["ppl"], rel=1e-4)
    assert dev["oovs"] == theirs["num_oov"]

    make_lang_test(lang_dir, report["arpa"], tmp_path / "lang_test")
    G = kaldifst.StdVectorFst.read(str(tmp_path / "lang_test" / "G.fst"))
    assert G.num_states > 1000
    masses = []
    for s in range(G.num_states):
        w = [a.weight.value for a in kaldifst.ArcIterator(G, s)]
        if G.final(s).value != math.inf:
            w.append(G.final(s).value)
        masses.append(np.log(np.exp(-np.array(w)).sum()))
    # stochastic-ish: back-off arcs only add mass (Kaldi's fstisstochastic shows the same on G)
    assert min(masses) > -1e-3 and max(masses) < math.log(20)


def test_lm_where_every_word_follows_a_context(tmp_path):
    """yesno-like text: every word (and </s>) follows NO and YES, so no mass is left to back
    off to. Each distribution must still sum to one and G must have no negative-cost arc."""
    write_table(tmp_path / "lexicon.txt", {"YES": "Y", "NO": "N"})
    lexicon, _ = build_lexicon(tmp_path / "lexicon.txt", use_cmudict=False)
    prepare_lang(lexicon, tmp_path / "lang")
    rng = np.random.default_rng(0)
    write_table(tmp_path / "text", {f"u{i}": " ".join(["NO", *rng.choice(["NO", "YES"], 7)]) for i in range(30)})
    for order in (1, 2):
        report = train_lm(tmp_path / "text", tmp_path / "lang", tmp_path / f"lm{order}", order=order)
        lm = ArpaLM.read(report["arpa"])
        assert lm.vocab == {"<s>", "NO", "YES", "</s>"}
        for history in [(), ("<s>",), ("NO",), ("YES",)][:1 if order == 1 else 4]:
            total = sum(10 ** lm.logprob(w, history) for w in ("NO", "YES", "</s>"))
            assert total == pytest.approx(1.0, abs=1e-6), (order, history)
        assert all(abs(b) < 5 for b in lm.bow.values())
        make_lang_test(tmp_path / "lang", report["arpa"], tmp_path / f"lang_test{order}")
        G = kaldifst.StdVectorFst.read(str(tmp_path / f"lang_test{order}" / "G.fst"))
        assert min(a.weight.value for s in range(G.num_states) for a in kaldifst.ArcIterator(G, s)) >= 0
