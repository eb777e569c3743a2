"""Decoding graph HCLG (Kaldi mkgraph.sh): L_disambig ∘ G determinized and minimized,
context composition with the tree's context width, then our H over senones.

As in Kaldi, H is first applied without self-loops and with one input label per
(topology, HMM state, senone), Kaldi's transition states; disambiguation symbols stay
on the input. That graph is determinized (log semiring), the disambiguation symbols
become epsilons, it is minimized, and the self-loops are added back with Kaldi's scaled
transition log-probabilities. Input labels of HCLG are senone + 1, output labels words.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import kaldifst

from asrkd.hmm.graphs import (ContextHmms, add_hmm_self_loops, compose_context, expand_hmms, map_arcs,
                              transition_costs)
from asrkd.hmm.tree import ContextTree
from asrkd.outputs import Output
from asrkd.topo import TopologyEntry, read_topo
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


def make_lg(lang_dir: Path) -> kaldifst.StdVectorFst:
    """min(det(L_disambig ∘ G)), ilabels phones and phone disambiguation symbols."""
    L = kaldifst.StdVectorFst.read(str(lang_dir / "L_disambig.fst"))
    G = kaldifst.StdVectorFst.read(str(lang_dir / "G.fst"))
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G)
    if LG.num_states == 0:
        raise AsrkdError(f"{lang_dir}: L_disambig ∘ G is empty (do L and G share words.txt?)")
    kaldifst.determinize_star(LG, use_log=True)  # log semiring keeps G's probabilities stochastic
    kaldifst.minimize_encoded(LG)
    return LG


def make_hclg(LG: kaldifst.StdVectorFst, tree: ContextTree, topo: list[TopologyEntry], disambig: list[int],
              self_loop_scale: float = 0.1) -> kaldifst.StdVectorFst:
    """min(det(H' ∘ C ∘ LG)) with H' free of self-loops, then the self-loops added."""
    CLG, info = compose_context(LG, tree, disambig)
    tstates: dict[tuple[int, int, int], int] = {}  # (topology entry, state, senone) -> label
    loop, pdf_label = {}, {}

    def label(entry: TopologyEntry, state: int, pdf: int) -> int:
        key = (id(entry), state, pdf)
        if key not in tstates:
            t = tstates[key] = len(tstates) + 1
            pdf_label[t] = pdf + 1
            loop_cost = dict(transition_costs(entry, self_loop_scale)[state]).get(state)
            if loop_cost is not None:
                loop[t] = (pdf + 1, loop_cost)
        return tstates[key]

    first_disambig = 1 << 24  # above every transition-state label
    HCLG = expand_hmms(CLG, ContextHmms(tree, topo, info), self_loop_scale, label=label,
                       keep=lambda ilabel: first_disambig + ilabel)
    if len(tstates) >= first_disambig:
        raise AsrkdError(f"{len(tstates)} transition states: too many")
    kaldifst.determinize_star(HCLG, use_log=True)
    map_arcs(HCLG, lambda a: kaldifst.StdArc(0, a.olabel, a.weight.value, a.nextstate)  # disambig -> eps
             if a.ilabel >= first_disambig else None)
    kaldifst.minimize_encoded(HCLG)
    HCLG = add_hmm_self_loops(HCLG, loop, pdf_label)
    kaldifst.arcsort(HCLG, sort_type="ilabel")
    return HCLG


def make_graph(lang_dir: str | Path, model_dir: str | Path, graph_dir: str | Path, force: bool = False) -> dict:
    """Build `graph_dir/HCLG.fst` for the tree in `model_dir`; returns size and timing info."""
    lang_dir, model_dir, graph_dir = Path(lang_dir), Path(model_dir), Path(graph_dir)
    for f in (lang_dir / "G.fst", lang_dir / "L_disambig.fst", model_dir / "tree"):
        if not f.is_file():
            raise AsrkdError(f"{f}: missing")
    out = Output(graph_dir, "make-graph", {}, {"lang": lang_dir, "model": model_dir})
    if out.done(force):
        return json.loads((graph_dir / "graph_info.json").read_text())
    t0 = time.time()
    tree = ContextTree.read(model_dir / "tree")
    disambig = [int(x) for x in (lang_dir / "phones" / "disambig.int").read_text().split()]
    LG = make_lg(lang_dir)
    t_lg = time.time() - t0
    HCLG = make_hclg(LG, tree, read_topo(lang_dir / "topo"), disambig)
    info = {"lg_states": LG.num_states, "hclg_states": HCLG.num_states,
            "hclg_arcs": sum(HCLG.num_arcs(s) for s in range(HCLG.num_states)),
            "num_pdfs": tree.num_pdfs, "context_width": tree.context_width,
            "lg_seconds": round(t_lg, 2), "build_seconds": round(time.time() - t0, 2)}
    with out.writing() as tmp:
        HCLG.write(str(tmp / "HCLG.fst"))
        info["hclg_bytes"] = (tmp / "HCLG.fst").stat().st_size
        for f in ("words.txt", "phones.txt"):
            shutil.copy(lang_dir / f, tmp / f)
        shutil.copy(model_dir / "tree", tmp / "tree")
        (tmp / "phones").mkdir()
        shutil.copy(lang_dir / "phones" / "silence.int", tmp / "phones" / "silence.int")  # for fMLLR's silence weight
        (tmp / "graph_info.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("%s: HCLG %d states, %d arcs, %.1f MB (LG %d states) built in %.1f s", graph_dir, info["hclg_states"],
             info["hclg_arcs"], info["hclg_bytes"] / 1e6, info["lg_states"], info["build_seconds"])
    return info
