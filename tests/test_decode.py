"""HCLG, hybrid Viterbi decoding, LM-weight tuning and WER scoring on yesno."""

import json
import logging

import kaldifst
import kaldiio
import numpy as np
import pytest

from asrkd.cli import build_parser
from asrkd.data import read_table, write_table
from asrkd.decode.decoder import (GRID_BEAM, MAX_ACTIVE, MAX_WIDEN, GmmScorer, PosteriorScorer, add_word_penalty,
                                  beyond_edge, choose_weight, decode, decode_utterance, widen_grid)
from asrkd.decode.graph import make_graph, make_lg
from asrkd.decode.lattice import SearchGraph, lattice_search
from asrkd.decode.score import compute_wer, format_wer, frame_accuracy, score
from asrkd.hmm.align import best_path
from asrkd.hmm.alignment import AlignmentDir
from asrkd.hmm.graphs import compile_graph
from asrkd.hmm.tree import ContextTree
from asrkd.lang import read_symbols
from asrkd.topo import read_topo
from asrkd.utils import AsrkdError


@pytest.fixture(scope="module")
def graph(yesno, yesno_mono):
    make_graph(yesno / "lang_test", yesno_mono / "mono", yesno_mono / "graph")
    return yesno_mono / "graph"


def word_ids(yesno, utt):
    words = read_symbols(yesno / "lang/words.txt")
    return [words[w] for w in read_table(yesno / "train_yesno/text")[utt].split()]


def test_hclg_accepts_alignment(yesno, yesno_mono, graph):
    info = json.loads((graph / "graph_info.json").read_text())
    assert info["hclg_states"] > 0 and info["num_pdfs"] == 16
    HCLG = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    ali = kaldiio.load_scp(str(yesno_mono / "mono_ali/ali.scp"))
    for utt in list(ali)[:3]:
        A = kaldifst.make_linear_acceptor((ali[utt] + 1).tolist())
        kaldifst.arcsort(A, sort_type="olabel")
        path = kaldifst.shortest_path(kaldifst.compose(A, HCLG))
        assert path.num_states > 0, f"HCLG rejects the alignment of {utt}"
        ok, _, words, _ = kaldifst.get_linear_symbol_sequence(path)
        assert ok and list(words) == word_ids(yesno, utt)


def path_cost(graph, senones):
    A = kaldifst.make_linear_acceptor((senones + 1).tolist())
    kaldifst.arcsort(A, sort_type="olabel")
    ok, _, _, weights = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(kaldifst.compose(A, graph)))
    assert ok
    return weights.value


def test_hclg_is_deterministic_and_keeps_path_costs(yesno, yesno_mono, graph):
    """Determinized before the self-loops went in: apart from self-loops no state has two
    arcs with the same senone; an alignment costs what it costs in the plain H∘C∘L∘G, or a
    little less where determinization in the log semiring summed paths with equal labels."""
    HCLG = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    for s in range(HCLG.num_states):
        labels = [a.ilabel for a in kaldifst.ArcIterator(HCLG, s) if a.ilabel and a.nextstate != s]
        assert len(labels) == len(set(labels)), s
    lang = yesno / "lang_test"
    disambig = [int(x) for x in (lang / "phones/disambig.int").read_text().split()]
    plain = compile_graph(make_lg(lang), ContextTree.read(graph / "tree"), read_topo(lang / "topo"), disambig)
    assert HCLG.num_states < plain.num_states
    ali = kaldiio.load_scp(str(yesno_mono / "mono_ali/ali.scp"))
    for utt in list(ali)[:3]:
        det, ref = path_cost(HCLG, ali[utt]), path_cost(plain, ali[utt])
        assert ref - 0.05 < det < ref + 1e-3


def test_decoding_alignment_posteriors_returns_transcript(yesno, yesno_mono, graph, tmp_path):
    HCLG = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    ali = kaldiio.load_scp(str(yesno_mono / "mono_ali/ali.scp"))
    utts = list(ali)[:4]
    # member 1 is sure of the aligned senone; member 2 is uniform: the ensemble mean still peaks there
    sure, flat = {}, {}
    for utt in utts:
        logp = np.full((len(ali[utt]), 16), np.log(0.01 / 15), dtype=np.float32)
        logp[np.arange(len(ali[utt])), ali[utt]] = np.log(0.99)
        sure[utt], flat[utt] = logp, np.full_like(logp, -np.log(16))
        words, final, _ = decode_utterance(HCLG, logp, 1.0, 13.0, 7000)
        assert final and words == word_ids(yesno, utt)
    for name, table in (("sure", sure), ("flat", flat)):
        kaldiio.save_ark(str(tmp_path / f"{name}.ark"), table, scp=str(tmp_path / f"{name}.scp"))
    priors = np.full(16, np.log(0.0625), dtype=np.float32)
    data = tmp_path / "data"
    data.mkdir()
    text = read_table(yesno / "train_yesno/text")
    write_table(data / "text", {u: text[u] for u in utts})
    scorer = PosteriorScorer([tmp_path / "sure.scp", tmp_path / "flat.scp"], priors)
    info = decode(graph, scorer, data, tmp_path / "decode", lm_weights=[1.0])
    assert info["wer"] == 0.0 and info["utts"] == 4
    assert (tmp_path / "decode/wer").read_text().startswith("%WER 0.00 [ 0 / 32,")
    r = frame_accuracy({u: scorer.log_posterior(u).argmax(1) for u in utts}, AlignmentDir(yesno_mono / "mono_ali"))
    assert r["frame_accuracy"] == 1.0 and r["utts"] == 4
    # another state of the same phone: wrong senone, right phone
    ali = AlignmentDir(yesno_mono / "mono_ali")
    phones = ali.pdf_phones
    sibling = np.array([next(t for t in range(len(phones)) if phones[t] == phones[s] and t != s)
                        for s in range(len(phones))])
    r = frame_accuracy({u: sibling[ali.ali[u]] for u in utts}, ali)
    assert r["frame_accuracy"] == 0.0 and r["phone_frame_accuracy"] == 1.0
    assert PosteriorScorer([tmp_path / "sure.scp"], priors)(utts[0]).shape == sure[utts[0]].shape
    kaldiio.save_ark(str(tmp_path / "short.ark"), {utts[0]: sure[utts[0]]}, scp=str(tmp_path / "short.scp"))
    with pytest.raises(AsrkdError, match="covers different utterances"):
        PosteriorScorer([tmp_path / "sure.scp", tmp_path / "short.scp"], priors)


def test_lattice_rescoring_by_hand():
    """Two frames, two paths: one word costly to the acoustics, or two cheap ones with an
    epsilon between them. A larger acoustic ratio favours the two words; a word insertion
    penalty the single one."""
    fst = kaldifst.StdVectorFst()
    s = [fst.add_state() for _ in range(5)]
    fst.start = s[0]
    A = kaldifst.StdArc
    fst.add_arc(s[0], A(1, 7, 1.0, s[1]))  # one word on senone 0, then senone 1
    fst.add_arc(s[1], A(2, 0, 0.0, s[4]))
    fst.add_arc(s[0], A(3, 8, 1.0, s[2]))  # two words on senones 2 and 3
    fst.add_arc(s[2], A(0, 0, 0.0, s[3]))
    fst.add_arc(s[3], A(4, 9, 1.0, s[4]))
    fst.set_final(s[4], 0.5)
    scores = np.array([[-2, -50, -1, -50], [-50, -2, -50, -1]], dtype=np.float32)
    g = SearchGraph(fst)
    lat = lattice_search(g, scores, beam=100.0)
    assert lat.final and lat.num_links == 5
    (w1, c1), (w2, c2), (w3, c3) = lat.best_paths(g, [1.0, 0.1, 1.0], [0.0, 0.0, 3.0])
    assert (w1, c1) == ([8, 9], 4.5) and (w2, c2) == ([7], pytest.approx(1.9)) and (w3, c3) == ([7], 8.5)
    fst.add_arc(s[3], A(0, 0, 0.0, s[2]))  # an epsilon cycle cannot be searched in topological order
    with pytest.raises(AsrkdError, match="epsilon cycle"):
        SearchGraph(fst)


def test_lattice_search_matches_kaldi_decoders(yesno, yesno_mono, graph):
    """On real scores the rescored grid equals kaldi-decoder's FasterDecoder at every weight and
    penalty (wide beam), kaldifst's scale_lattice + shortest_path over LatticeSimpleDecoder's
    lattice, and with max-active binding FasterDecoder with the same pruning."""
    HCLG = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    g = SearchGraph(HCLG)
    scorer = GmmScorer(yesno_mono / "mono", yesno / "train_yesno")
    grid = [(lmwt, p) for lmwt in (2.0, 10.0, 20.0) for p in (0.0, 1.0)]
    for utt in scorer.keys()[:3]:
        ll = scorer(utt)
        lat = lattice_search(g, ll / 10.0, 16.0)
        assert lat.final and lat.num_links > 0
        paths = lat.best_paths(g, [10.0 / w for w, _ in grid], [p for _, p in grid])
        for (lmwt, p), (words, cost) in zip(grid, paths):
            one = decode_utterance(add_word_penalty(HCLG, p), ll, 1.0 / lmwt, 16.0, 100000)
            assert words == one[0] and cost == pytest.approx(one[2], rel=1e-5)
            if p == 0:
                raw = kaldi_raw_lattice(HCLG, ll / 10.0)
                kaldifst.scale_lattice([[1.0, 0.0], [0.0, 10.0 / lmwt]], raw)
                ok, _, olabels, w = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(raw))
                assert ok and list(olabels) == words and w.value1 + w.value2 == pytest.approx(cost, rel=1e-5)
        # yesno's HCLG is small: max-active binds below about 12 tokens. (Binding much harder, the
        # two part ways: FasterDecoder tightens its cutoff in hash-list order, ours in token order.)
        for max_active, min_active in ((8, 2), (10, 2)):
            pruned = lattice_search(g, ll / 10.0, 13.0, max_active, min_active)
            assert len(pruned.tok_state) < len(lattice_search(g, ll / 10.0, 13.0).tok_state)
            (words, cost), = pruned.best_paths(g, [1.0], [0.0])
            _, _, kaldi_words, kaldi_cost = best_path(HCLG, ll / 10.0, 13.0, max_active, min_active)
            assert words == kaldi_words and cost == pytest.approx(kaldi_cost, rel=1e-5)


def kaldi_raw_lattice(HCLG, scores):
    import kaldi_decoder

    dec = kaldi_decoder.LatticeSimpleDecoder(HCLG, kaldi_decoder.LatticeSimpleDecoderConfig(beam=16.0, lattice_beam=8.0))
    dec.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(scores, dtype=np.float32)))
    return dec.get_raw_lattice()[1]


def test_grid_is_centred_and_exact_at_a_wide_beam(yesno, yesno_mono, graph, tmp_path):
    """decode()'s grid (searched at the middle LM weight and penalty, the others' penalty
    differences added in rescoring) gives every pair the words and cost of a wide-beam pass."""
    scorer, data = GmmScorer(yesno_mono / "mono", yesno / "train_yesno"), yesno / "train_yesno"
    wide = dict(beam=16.0, grid_beam=16.0, max_active=100000)

    def logged(out, search):  # {(utt, lmwt, wip): cost} from log/decode.log
        rows = [dict(f.split("=") for f in ln.split()[1:]) | {"utt": ln.split()[0]}
                for ln in (out / "log/decode.log").read_text().splitlines()]
        return {(r["utt"], r["lmwt"], r["wip"]): float(r["cost"]) for r in rows if r["search"] == search}

    decode(graph, scorer, data, tmp_path / "grid", lm_weights=[5, 10, 15], word_ins_penalties=[0, 1, 2], **wide)
    grid = logged(tmp_path / "grid", "lattice")
    for w, p in [(5, 0), (10, 1), (15, 2), (5, 2), (15, 0)]:
        decode(graph, scorer, data, tmp_path / f"{w}_{p}", lm_weights=[w], word_ins_penalties=[p], **wide)
        one = logged(tmp_path / f"{w}_{p}", "pass")
        assert len(one) == 30 and all(c == pytest.approx(grid[k], rel=1e-5, abs=0.011) for k, c in one.items())
        assert (tmp_path / f"{w}_{p}/hyp/{w}_{p}.txt").read_text() == (tmp_path / f"grid/hyp/{w}_{p}.txt").read_text()


def test_gmm_decoding_tunes_on_dev_only(yesno, yesno_mono, graph):
    exp = yesno_mono / "mono"
    dev = decode(graph, GmmScorer(exp, yesno / "train_yesno"), yesno / "train_yesno", exp / "decode_train",
                 lm_weights=[5, 10, 15], word_ins_penalties=[0, 1], nj=2)
    pairs = len(dev["wer_per_weight"])  # 6, and any the grid was widened by
    assert pairs >= 6 and len(list((exp / "decode_train").glob("wer_*_*"))) == pairs
    assert dev["wer"] == min(dev["wer_per_weight"].values()) and dev["wer"] <= 5.0
    searches = [ln.split()[1] for ln in (exp / "decode_train/log/decode.log").read_text().splitlines()]
    assert searches.count("search=lattice") == 30 * pairs and searches.count("search=pass") == 30  # + the chosen pair's
    again = decode(graph, GmmScorer(exp, yesno / "train_yesno"), yesno / "train_yesno", exp / "decode_train_pass",
                   tuned_on=exp / "decode_train", nj=2)
    assert (exp / "decode_train/text").read_text() == (exp / "decode_train_pass/text").read_text()
    assert again["wer"] == dev["wer"]
    test = decode(graph, GmmScorer(exp, yesno / "test_yesno"), yesno / "test_yesno", exp / "decode_test",
                  tuned_on=exp / "decode_train", nj=2)
    assert (test["best_lmwt"], test["best_wip"]) == (dev["best_lmwt"], dev["best_wip"])
    assert [p.name for p in (exp / "decode_test").glob("wer_*_*")] == \
        [f"wer_{dev['best_lmwt']:g}_{dev['best_wip']:g}"]          # test is decoded at the dev choice only
    assert test["wer"] <= 10.0 and 0 < test["rtf_per_core"] < 1
    hyps = read_table(exp / "decode_test/text", allow_empty_value=True)
    assert len(hyps) == 30 and all(set(h.split()) <= {"YES", "NO"} for h in hyps.values())
    with pytest.raises(AsrkdError, match="best_lmwt: missing"):
        decode(graph, GmmScorer(exp, yesno / "test_yesno"), yesno / "test_yesno", exp / "x", tuned_on=exp / "nope")
    with pytest.raises(AsrkdError, match="LM weights must be positive"):
        decode(graph, GmmScorer(exp, yesno / "test_yesno"), yesno / "test_yesno", exp / "x", lm_weights=[0, 10])


def edges_of_choice(info):
    """{(axis, side): values added on that side} for each edge of the final grid in `info`
    ("lmwt"/"wip", "low"/"high") that its chosen pair lies on."""
    edges = {}
    for axis, key, values, x in (("lmwt", "lm_weight", info["lm_weights"], info["best_lmwt"]),
                                 ("wip", "word_ins_penalty", info["word_ins_penalties"], info["best_wip"])):
        added = [w[key] for w in info["widened"] if key in w]
        first = [v for v in values if v not in added]
        if len(values) > 1 and x in (values[0], values[-1]):
            side = "low" if x == values[0] else "high"
            edges[axis, side] = [a for a in added if (a < first[0] if side == "low" else a > first[-1])]
    return edges


def test_grid_widens_while_the_choice_lies_on_its_edge(yesno, yesno_mono, graph, tmp_path, caplog):
    """On yesno a low LM weight and a high penalty are best: the 16..32 x -4..-2 grid's choice
    lies in its corner. With `--max-widen 0` it stays there; by default the grid grows on those
    sides, the new pairs get hyp/ and wer_* files like the others, and the final choice is
    interior or on a side that may not grow further."""
    caplog.set_level(logging.INFO, logger="asrkd.decode.decoder")
    data, lms, wips = yesno / "train_yesno", [16.0, 24.0, 32.0], [-4.0, -3.0, -2.0]
    args = build_parser().parse_args(["decode", "--model-dir", str(yesno_mono / "mono"), "--lm-weights", "16,24,32",
                                      "--word-ins-penalties=-4,-3,-2", "--max-widen", "0", str(graph), str(data),
                                      str(tmp_path / "fixed")])
    args.func(args)
    fixed = json.loads((tmp_path / "fixed/decode_info.json").read_text())
    assert fixed["widened"] == [] and (fixed["lm_weights"], fixed["word_ins_penalties"]) == (lms, wips)
    assert set(edges_of_choice(fixed)) == {("lmwt", "low"), ("wip", "high")}
    assert len(list((tmp_path / "fixed").glob("wer_*_*"))) == 9 and "edge of the grid" not in caplog.text

    info = decode(graph, GmmScorer(yesno_mono / "mono", data), data, tmp_path / "wide", lm_weights=lms,
                  word_ins_penalties=wips)
    assert info["widened"][:2] == [{"chosen": [16.0, -2.0], "lm_weight": 8.0},
                                   {"chosen": [16.0, -2.0], "word_ins_penalty": -1.0}]
    assert "chosen pair (16, -2) on the edge of the grid: adding LM weight 8" in caplog.text
    assert "chosen pair (16, -2) on the edge of the grid: adding penalty -1" in caplog.text
    assert info["lm_weights"] == sorted(lms + [w["lm_weight"] for w in info["widened"] if "lm_weight" in w])
    assert info["word_ins_penalties"] == sorted(wips + [w["word_ins_penalty"] for w in info["widened"]
                                                        if "word_ins_penalty" in w])
    pairs = [f"{w:g}_{p:g}" for w in info["lm_weights"] for p in info["word_ins_penalties"]]
    assert sorted(info["wer_per_weight"]) == sorted(pairs) and info["search"]["max_widen"] == MAX_WIDEN
    assert all((tmp_path / f"wide/wer_{k}").is_file() and (tmp_path / f"wide/hyp/{k}.txt").is_file() for k in pairs)
    assert len(read_table(tmp_path / "wide/hyp/8_-1.txt", allow_empty_value=True)) == 30
    assert all(info["wer_per_weight"][k] == v for k, v in fixed["wer_per_weight"].items())  # the same first search
    assert info["wer_per_weight"][f"{info['best_lmwt']:g}_{info['best_wip']:g}"] == min(info["wer_per_weight"].values())
    for (axis, side), added in edges_of_choice(info).items():  # only where that side may not grow
        lowest = info["lm_weights"][:2]
        assert len(added) == MAX_WIDEN or (axis, side) == ("lmwt", "low") and 2 * lowest[0] - lowest[1] <= 0
    searches = [ln.split()[1] for ln in (tmp_path / "wide/log/decode.log").read_text().splitlines()]
    assert searches.count("search=lattice") == 30 * len(pairs) and searches.count("search=pass") == 30


def test_grid_widens_up_to_its_limit_and_keeps_lm_weights_positive(yesno, yesno_mono, graph, tmp_path):
    """The 5..15 x -8..-4 grid's choice lies on its lowest LM weight, which may not go down to
    0, and its highest penalty, which grows once at `max_widen` 1."""
    data = yesno / "train_yesno"
    info = decode(graph, GmmScorer(yesno_mono / "mono", data), data, tmp_path / "d", lm_weights=[5, 10, 15],
                  word_ins_penalties=[-8, -6, -4], max_widen=1)
    assert info["widened"] == [{"chosen": [5.0, -4.0], "word_ins_penalty": -2.0}]
    assert (info["lm_weights"], info["word_ins_penalties"]) == ([5, 10, 15], [-8, -6, -4, -2])
    assert len(list((tmp_path / "d").glob("wer_*_*"))) == 12


def test_single_pair_never_widens(yesno, yesno_mono, graph, tmp_path):
    """A test set decoded at the tuning set's choice, or any single pair, is one pass at that pair."""
    data = yesno / "train_yesno"
    scorer = GmmScorer(yesno_mono / "mono", data)
    one = decode(graph, scorer, data, tmp_path / "one", lm_weights=[16], word_ins_penalties=[-4])
    assert one["widened"] == [] and [p.name for p in (tmp_path / "one").glob("wer_*_*")] == ["wer_16_-4"]
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/best_lmwt").write_text("32 -4\n")  # a corner of the recipe grid
    test = decode(graph, GmmScorer(yesno_mono / "mono", yesno / "test_yesno"), yesno / "test_yesno",
                  tmp_path / "test", tuned_on=tmp_path / "dev")
    assert test["widened"] == [] and (test["lm_weights"], test["word_ins_penalties"]) == ([32], [-4])
    assert [p.name for p in (tmp_path / "test").glob("hyp/*")] == ["32_-4.txt"]


def test_choose_weight_prefers_middle_of_ties():
    r = lambda w: {"wer": w}  # noqa: E731
    assert choose_weight({(5, 0): r(1.0), (10, 0): r(0.0), (15, 0): r(0.0), (20, 0): r(0.0), (10, 1): r(0.0)}) \
        == (15, 0)
    assert choose_weight({(5, 0): r(2.0), (10, 0): r(3.0)}) == (5, 0)


def fake_search(surface):
    """A `search` for widen_grid: every pair's WER from `surface`, its pairs recorded per call."""
    calls = []

    def search(pairs):
        calls.append(sorted(pairs))
        return [{}], {w: {} for w in pairs}, {w: {"wer": surface(*w)} for w in pairs}
    return search, calls


def test_widen_grid_follows_the_best_pair_out_to_the_limit():
    """Best at (27, -2), outside a 9..21 x 0..2 grid: the corner (21, 0) is chosen, both
    sides widen together (the new grid stays a rectangle) until the choice is interior, or
    stops at the limit of widenings per side."""
    def surface(lmwt, wip):
        return (lmwt - 27) ** 2 + (wip + 2) ** 2
    grid = {(w, p): {"wer": surface(w, p)} for w in (9, 12, 15, 18, 21) for p in (0, 1, 2)}
    assert choose_weight(grid) == (21, 0)
    search, calls = fake_search(surface)
    hyps, wers = {w: {} for w in grid}, dict(grid)
    best, widened, results = widen_grid(search, hyps, wers)
    assert best == (27, -2) and len(calls) == 3 and len(results) == 3
    assert [{k: v for k, v in w.items() if k != "chosen"} for w in widened] == [
        {"lm_weight": 24}, {"word_ins_penalty": -1}, {"lm_weight": 27}, {"word_ins_penalty": -2},
        {"lm_weight": 30}, {"word_ins_penalty": -3}]
    assert widened[0]["chosen"] == [21, 0] and widened[-1]["chosen"] == [27, -2]
    assert calls[0] == sorted([(24, p) for p in (-1, 0, 1, 2)] + [(w, -1) for w in (9, 12, 15, 18, 21)])
    assert set(wers) == set(hyps) == {(w, p) for w in range(9, 31, 3) for p in range(-3, 3)}
    best, widened, _ = widen_grid(fake_search(surface)[0], {}, dict(grid), max_widen=1)
    assert best == (24, -1) and len(widened) == 2
    # interior: nothing to search
    search, calls = fake_search(lambda w, p: abs(w - 15) + abs(p - 1))
    assert widen_grid(search, {}, {w: {"wer": abs(w[0] - 15) + abs(w[1] - 1)} for w in grid}) == ((15, 1), [], [])
    assert calls == []
    # a flat optimum: the chosen edge pair ties pairs off that edge, so no side widens
    flat = lambda w, p: 0.0 if p < 2 and w < 21 else 1.0  # noqa: E731
    search, calls = fake_search(flat)
    assert widen_grid(search, {}, {w: {"wer": flat(*w)} for w in grid}) == ((12, 0), [], []) and calls == []


def test_widening_keeps_lm_weights_positive_and_single_values_fixed():
    assert beyond_edge(9, [9, 12, 15]) == ("low", 6) and beyond_edge(15, [9, 12, 15]) == ("high", 18)
    assert beyond_edge(12, [9, 12, 15]) is None and beyond_edge(0, [0]) is None
    assert beyond_edge(0, [0, 0.5, 1.5]) == ("low", -0.5) and beyond_edge(1.5, [0, 0.5, 1.5]) == ("high", 2.5)
    assert beyond_edge(0.3, [0.1, 0.2, 0.3]) == ("high", 0.4)
    assert beyond_edge(3, [3, 6], positive=True) is None and beyond_edge(4, [4, 6], positive=True) == ("low", 2)
    search, calls = fake_search(lambda w, p: w + p)  # lower is better all the way down
    best, widened, _ = widen_grid(search, {}, {(w, 0.0): {"wer": w} for w in (6, 9)})
    assert best == (3, 0.0) and widened == [{"chosen": [6, 0.0], "lm_weight": 3}] and calls == [[(3, 0.0)]]


def test_wer_hand_computed():
    refs = {"u1": "a b c d", "u2": "a b", "u3": "", "u4": "x y"}
    hyps = {"u1": "a x c d e", "u2": "", "u3": "z", "u5": "ignored"}
    r = compute_wer(refs, hyps, {"u1": "s1", "u2": "s1", "u3": "s2", "u4": "s2"})
    # u1: 1 sub + 1 ins; u2: 2 del; u3: 1 ins; u4 (no hypothesis): 2 del
    assert (r["sub"], r["ins"], r["del"], r["err"], r["words"]) == (1, 2, 4, 7, 8)
    assert r["wer"] == pytest.approx(87.5) and r["sent_err"] == 4 and r["missing"] == 1
    assert r["per_spk"]["s1"]["err"] == 4 and r["per_spk"]["s2"]["err"] == 3
    assert format_wer(r)[0] == "%WER 87.50 [ 7 / 8, 2 ins, 4 del, 1 sub ]"
    assert r["per_utt"]["u2"]["ali"] == [("a", "<eps>"), ("b", "<eps>")]
    assert compute_wer({"u": "a"}, {"u": "a"})["wer"] == 0.0
    assert compute_wer({"u": ""}, {"u": ""})["wer"] == 0.0


def test_score_cli_files(yesno, tmp_path):
    hyp = tmp_path / "hyp.txt"
    text = read_table(yesno / "test_yesno/text")
    utt = next(u for u, t in text.items() if "YES" in t.split())
    write_table(hyp, {u: (t if u != utt else "YES") for u, t in text.items()})
    r = score(yesno / "test_yesno", hyp, tmp_path / "out")
    assert r["err"] == 7 and r["sent_err"] == 1
    assert (tmp_path / "out/wer").read_text().splitlines()[1] == "%SER 3.33 [ 1 / 30 ]"
    assert f"{utt} #csid" in (tmp_path / "out/wer_details/per_utt").read_text()


def test_cli_decode_defaults_are_the_decoders():
    """`asrkd decode` (which imports the decoder lazily) searches with decode()'s max-active, grid beam
    and limit of widenings."""
    args = build_parser().parse_args(["decode", "--model-dir", "exp/tri", "graph", "data/test", "out"])
    assert (args.max_active, args.grid_beam, args.max_widen) == (MAX_ACTIVE, GRID_BEAM, MAX_WIDEN)
