"""Lattice decoding and LM-weight / insertion-penalty rescoring (Kaldi's decode.sh + score.sh).

kaldi-decoder's LatticeSimpleDecoder searches HCLG once, at one acoustic scale a0, and keeps
every path within `lattice_beam` of the best as a raw state-level lattice whose arcs carry
(graph cost, scaled acoustic cost). The best path for acoustic scale a and word insertion
penalty p minimises  graph + p * words + (a / a0) * acoustic  (lattice-scale,
lattice-add-penalty, lattice-best-path). All grid points are rescored in one pass over the
lattice: a Viterbi over its states in topological order with one cost column per point.
"""

from __future__ import annotations

import kaldi_decoder
import numpy as np


class RawLattice:
    """A raw lattice's arcs as arrays: src, dst, olabel (word id or 0), graph and acoustic cost;
    final states with their costs; parsed from OpenFst's text form."""

    def __init__(self, text: str, start: int):
        arcs, finals = [], []
        for line in text.splitlines():
            f = line.split()
            g, ac = f[-1].split(",") if "," in line else (0.0, 0.0)  # weight One is left out
            if len(f) >= 4:  # arc: src dst ilabel olabel [g,ac]
                arcs.append((int(f[0]), int(f[1]), int(f[3]), float(g), float(ac)))
            elif f:  # final state: s [g,ac]
                finals.append((int(f[0]), float(g), float(ac)))
        a = np.array(arcs, dtype=np.float64).reshape(-1, 5)
        self.src, self.dst, self.olabel = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64)
        self.graph, self.acoustic = a[:, 3], a[:, 4]
        f = np.array(finals, dtype=np.float64).reshape(-1, 3)
        self.final_state, self.final_graph, self.final_acoustic = f[:, 0].astype(np.int64), f[:, 1], f[:, 2]
        self.start = start
        self.num_states = int(max(self.src.max(initial=start), self.dst.max(initial=start),
                                  self.final_state.max(initial=start))) + 1

    @property
    def num_arcs(self) -> int:
        return len(self.src)

    def best_paths(self, ac_ratios: np.ndarray, penalties: np.ndarray) -> list[tuple[list[int], float] | None]:
        """(word ids, cost) of the best path for every (acoustic ratio a/a0, penalty) column,
        or None where no final state is reachable."""
        ac_ratios, penalties = np.asarray(ac_ratios, np.float64), np.asarray(penalties, np.float64)
        k = len(ac_ratios)
        if not len(self.final_state):
            return [None] * k
        cost = self.graph[:, None] + self.acoustic[:, None] * ac_ratios + (self.olabel > 0)[:, None] * penalties
        best = np.full((self.num_states, k), np.inf)
        best[self.start] = 0.0
        back = np.full((self.num_states, k), -1, dtype=np.int64)
        # Kahn's algorithm by levels: the arcs out of states whose predecessors are all done
        order = np.argsort(self.src, kind="stable")
        first = np.searchsorted(self.src[order], np.arange(self.num_states + 1))
        indeg = np.bincount(self.dst, minlength=self.num_states)
        frontier = np.flatnonzero(indeg == 0)
        while frontier.size:
            lens = first[frontier + 1] - first[frontier]
            if not lens.sum():
                break
            offsets = np.repeat(first[frontier] - np.cumsum(lens) + lens, lens)
            arcs = order[offsets + np.arange(lens.sum())]
            dst = self.dst[arcs]
            total = best[self.src[arcs]] + cost[arcs]
            np.minimum.at(best, dst, total)
            r, c = np.nonzero(total <= best[dst])
            back[dst[r], c] = arcs[r]
            np.subtract.at(indeg, dst, 1)
            frontier = np.unique(dst[indeg[dst] == 0])
        final = best[self.final_state] + self.final_graph[:, None] + self.final_acoustic[:, None] * ac_ratios
        out = []
        for c in range(k):
            j = int(np.argmin(final[:, c]))
            if not np.isfinite(final[j, c]):
                out.append(None)
                continue
            words, s = [], int(self.final_state[j])
            while s != self.start:
                a = back[s, c]
                if self.olabel[a]:
                    words.append(int(self.olabel[a]))
                s = int(self.src[a])
            out.append((words[::-1], float(final[j, c])))
        return out


def decode_lattice(graph, scores: np.ndarray, beam: float, lattice_beam: float) -> tuple[RawLattice | None, bool]:
    """LatticeSimpleDecoder over `graph` for [T, num_pdfs] already-scaled scores: (raw lattice
    or None when nothing survived, whether a final state was reached)."""
    cfg = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=lattice_beam)
    decoder = kaldi_decoder.LatticeSimpleDecoder(graph, cfg)
    decoder.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(scores, dtype=np.float32)))
    final = bool(np.isfinite(decoder.final_relative_cost()))
    ok, lat = decoder.get_raw_lattice(use_final_probs=final)
    if not ok or lat.num_states == 0:
        return None, False
    return RawLattice(lat.to_str(), lat.start), final
