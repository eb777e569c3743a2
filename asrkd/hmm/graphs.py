"""Graphs whose arcs consume frames: (C ∘) L ∘ transcript or G, expanded with HMMs.

Every arc of the expanded graph consumes one frame and its input label is pdf id + 1,
which is what kaldi-decoder's DecodableCtc expects of a [T, num_pdfs] log-likelihood
matrix. Arc weights carry the topology's transition log-probabilities.
"""

from __future__ import annotations

import math
from typing import Callable

import kaldifst

from asrkd.hmm.tree import ContextTree
from asrkd.topo import TopologyEntry


def transcript_phone_fst(L: kaldifst.StdVectorFst, word_ids: list[int]) -> kaldifst.StdVectorFst:
    """Phones -> words FST accepting exactly the transcript (all prons, optional silence).

    `L` must be olabel-sorted (as written by prepare_lang).
    """
    W = kaldifst.make_linear_acceptor(word_ids)
    LW = kaldifst.compose(L, W)
    kaldifst.rmepsilon(LW)
    return LW


class ContextHmms:
    """hmm_for(ilabel) for `expand_hmms`: the central phone's topology and the tree's
    senone for each of its states. With context (width > 1) ilabels index `ilabel_info`
    (from compose_context). Disambiguation symbols (a window of size one, or for monophones
    a label with no topology) become epsilons."""

    def __init__(self, tree: ContextTree, topo: list[TopologyEntry], ilabel_info: list[list[int]] | None = None):
        self.tree, self.info, self.cache = tree, ilabel_info, {}
        self.entry = {p: e for e in topo for p in e.phones}

    def __call__(self, ilabel: int):
        context = (ilabel,) if self.info is None else tuple(self.info[ilabel])
        if len(context) != self.tree.context_width or context[self.tree.central_position] not in self.entry:
            return None
        if context not in self.cache:
            entry = self.entry[context[self.tree.central_position]]
            self.cache[context] = entry, [self.tree.senone(context, s) for s in range(entry.num_states)]
        return self.cache[context]


def compose_context(fst: kaldifst.StdVectorFst, tree: ContextTree, disambig: list[int] = ()):
    """C ∘ fst for the tree's context width: (CLW, ilabel_info), or (fst, None) for monophones."""
    if tree.context_width == 1:
        return fst, None
    return kaldifst.compose_context(disambig_syms=list(disambig), context_width=tree.context_width,
                                    central_position=tree.central_position, ifst=fst)


def compile_graph(LW: kaldifst.StdVectorFst, tree: ContextTree, topo: list[TopologyEntry],
                  disambig: list[int] = ()) -> kaldifst.StdVectorFst:
    """H ∘ C ∘ LW for phones->words FST LW: context composition when the tree has context,
    then HMM expansion over senones; ilabel-sorted for the decoder."""
    CLW, info = compose_context(LW, tree, disambig)
    graph = expand_hmms(CLW, ContextHmms(tree, topo, info))
    kaldifst.arcsort(graph, sort_type="ilabel")
    return graph


def map_arcs(fst: kaldifst.StdVectorFst, change: Callable[[kaldifst.StdArc], kaldifst.StdArc | None]) -> None:
    """Replace, in place and in order, every arc for which `change(arc)` gives a new arc."""
    for s in range(fst.num_states):
        arcs = list(kaldifst.ArcIterator(fst, s))
        new = [change(a) for a in arcs]
        if any(n is not None for n in new):
            fst.delete_arcs(s, len(arcs))
            for a, n in zip(arcs, new):
                fst.add_arc(s, a if n is None else n)


def transition_costs(entry: TopologyEntry, self_loop_scale: float) -> list[list[tuple[int, float]]]:
    """Kaldi's scaled transitions: a self-loop costs -s log p; leaving a state costs
    -s log(1-p) - log(p_j / (1-p)) (the other transitions renormalised)."""
    out = []
    for i, arcs in enumerate(entry.transitions):
        loop = sum(p for j, p in arcs if j == i)
        costs = []
        for j, p in arcs:
            if j == i:
                costs.append((j, -self_loop_scale * math.log(p)))
            else:
                costs.append((j, -self_loop_scale * math.log(1 - loop) - math.log(p / (1 - loop))))
        out.append(costs)
    return out


def expand_hmms(
    fst: kaldifst.StdVectorFst,
    hmm_for: Callable[[int], tuple[TopologyEntry, list[int]]],
    self_loop_scale: float = 0.1,
    label: Callable[[TopologyEntry, int, int], int] | None = None,
    keep: Callable[[int], int] = lambda ilabel: 0,
) -> kaldifst.StdVectorFst:
    """Replace every non-epsilon arc by its HMM; `hmm_for(ilabel)` gives (topology, pdf per
    state), or None for a label not to expand, which becomes `keep(ilabel)` (epsilon by
    default). Arcs entering HMM state i are labelled pdf + 1, with self-loops; or, given
    `label(topology, i, pdf)`, labelled with that and without self-loops (Kaldi's H
    before determinization; `add_hmm_self_loops` puts them back)."""
    out = kaldifst.StdVectorFst()
    n = fst.num_states
    for _ in range(n):
        out.add_state()
    out.start = fst.start
    costs = {}
    for s in range(n):
        final = fst.final(s).value
        if final != math.inf:
            out.set_final(s, final)
        for arc in kaldifst.ArcIterator(fst, s):
            hmm = hmm_for(arc.ilabel) if arc.ilabel else None
            if hmm is None:
                out.add_arc(s, kaldifst.StdArc(keep(arc.ilabel) if arc.ilabel else 0, arc.olabel, arc.weight.value,
                                               arc.nextstate))
                continue
            entry, pdfs = hmm
            lab = [pdf + 1 if label is None else label(entry, i, pdf) for i, pdf in enumerate(pdfs)]
            states = [out.add_state() for _ in range(entry.num_states)]
            out.add_arc(s, kaldifst.StdArc(lab[0], arc.olabel, arc.weight.value, states[0]))
            if id(entry) not in costs:
                costs[id(entry)] = transition_costs(entry, self_loop_scale)
            for i, transitions in enumerate(costs[id(entry)]):
                for j, cost in transitions:
                    if j == entry.num_states:
                        out.add_arc(states[i], kaldifst.StdArc(0, 0, cost, arc.nextstate))
                    elif j != i or label is None:
                        out.add_arc(states[i], kaldifst.StdArc(lab[j], 0, cost, states[j]))
    return out


def add_hmm_self_loops(fst: kaldifst.StdVectorFst, loop: dict[int, tuple[int, float]],
                       relabel: dict[int, int]) -> kaldifst.StdVectorFst:
    """Kaldi's AddSelfLoops for a graph whose arc labelled t enters an HMM state with the
    self-loop loop[t] = (final ilabel, cost). A state entered by arcs that disagree on the
    self-loop (or the start state, if an arc enters it) is first split, one copy per
    self-loop. Input labels are mapped through `relabel`; labels not in it become 0."""
    n = fst.num_states
    arcs = [list(kaldifst.ArcIterator(fst, s)) for s in range(n)]
    copies = [{} for _ in range(n)]  # state -> {self-loop: copy}
    copies[fst.start][None] = fst.start
    for s in range(n):
        for a in arcs[s]:
            copies[a.nextstate].setdefault(loop.get(a.ilabel), None)
    out = kaldifst.StdVectorFst()
    for _ in range(n):
        out.add_state()
    out.start = fst.start
    home = []  # (state of out, original state, self-loop)
    for s in range(n):
        for k, c in enumerate(list(copies[s])):
            copies[s][c] = s if k == 0 else out.add_state()
            home.append((copies[s][c], s, c))
    for q, s, c in home:
        final = fst.final(s).value
        if final != math.inf:
            out.set_final(q, final)
        if c is not None:
            out.add_arc(q, kaldifst.StdArc(c[0], 0, c[1], q))
        for a in arcs[s]:
            out.add_arc(q, kaldifst.StdArc(relabel.get(a.ilabel, 0), a.olabel, a.weight.value,
                                           copies[a.nextstate][loop.get(a.ilabel)]))
    return out
