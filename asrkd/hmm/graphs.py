"""Training graphs: L ∘ transcript, expanded with HMMs.

Every arc of the expanded graph consumes one frame and its input label is pdf id + 1,
which is what kaldi-decoder's DecodableCtc expects of a [T, num_pdfs] log-likelihood
matrix. Arc weights carry the topology's transition log-probabilities.
"""

from __future__ import annotations

import math
from typing import Callable

import kaldifst

from asrkd.hmm.topo import TopologyEntry


def transcript_phone_fst(L: kaldifst.StdVectorFst, word_ids: list[int]) -> kaldifst.StdVectorFst:
    """Phones -> words FST accepting exactly the transcript (all prons, optional silence).

    `L` must be olabel-sorted (as written by prepare_lang).
    """
    W = kaldifst.make_linear_acceptor(word_ids)
    LW = kaldifst.compose(L, W)
    kaldifst.rmepsilon(LW)
    return LW


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
) -> kaldifst.StdVectorFst:
    """Replace every non-epsilon arc by its HMM; `hmm_for(ilabel)` gives (topology, pdf per state)."""
    out = kaldifst.StdVectorFst()
    n = fst.num_states
    for _ in range(n):
        out.add_state()
    out.start = fst.start
    for s in range(n):
        final = fst.final(s).value
        if final != math.inf:
            out.set_final(s, final)
        for arc in kaldifst.ArcIterator(fst, s):
            if arc.ilabel == 0:
                out.add_arc(s, kaldifst.StdArc(0, arc.olabel, arc.weight.value, arc.nextstate))
                continue
            entry, pdfs = hmm_for(arc.ilabel)
            states = [out.add_state() for _ in range(entry.num_states)]
            out.add_arc(s, kaldifst.StdArc(pdfs[0] + 1, arc.olabel, arc.weight.value, states[0]))
            for i, transitions in enumerate(transition_costs(entry, self_loop_scale)):
                for j, cost in transitions:
                    if j == entry.num_states:
                        out.add_arc(states[i], kaldifst.StdArc(0, 0, cost, arc.nextstate))
                    else:
                        out.add_arc(states[i], kaldifst.StdArc(pdfs[j] + 1, 0, cost, states[j]))
    return out

