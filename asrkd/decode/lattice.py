"""Lattice search with max-active and LM-weight / insertion-penalty rescoring (Kaldi's decode.sh
with a lattice-faster decoder, then score.sh).

One pass searches HCLG at acoustic scale a0 with FasterDecoder's pruning (beam, max-active,
min-active, adaptive beam) and keeps every arc it expands as a link between two tokens: a raw
token-level lattice, as Kaldi's LatticeFasterDecoder's before lattice-beam pruning. The best
path for acoustic scale a and word insertion penalty p minimises
graph + p * words + (a / a0) * acoustic over those links (lattice-scale, lattice-add-penalty,
lattice-best-path); one forward sweep rescores every grid point.

Ours because kaldi-decoder's LatticeSimpleDecoder has no max-active (it costs 6 single passes
at a beam that already loses paths, docs/benchmarks.md, "Tuning grid") and no installable package exposes
the lattice of Kaldi's LatticeFasterDecoder. The search is compiled with numba; the tests hold
it to kaldi-decoder's FasterDecoder and LatticeSimpleDecoder. A frame's epsilon arcs are
expanded in a topological order of HCLG's epsilon arcs, so each token is expanded once, with
its final cost, and the links come out in an order in which one sweep is exact for any weights.
"""

from __future__ import annotations

import heapq
from collections import deque

import kaldifst
import numba
import numpy as np

from asrkd.utils import AsrkdError


class SearchGraph:
    """HCLG as arrays: emitting arcs (ilabel = senone + 1) and epsilon arcs by source state,
    final costs, and every state's rank in a topological order of the epsilon arcs."""

    def __init__(self, fst: kaldifst.StdVectorFst):
        n = fst.num_states
        arcs = np.array([(s, a.ilabel, a.olabel, a.weight.value, a.nextstate)
                         for s in range(n) for a in kaldifst.ArcIterator(fst, s)], dtype=np.float64).reshape(-1, 5)
        src, ilabel = arcs[:, 0].astype(np.int64), arcs[:, 1].astype(np.int32)
        self.emitting = self._by_source(arcs[ilabel > 0], n)
        self.epsilon = self._by_source(arcs[ilabel == 0], n)
        self.final = np.array([fst.final(s).value for s in range(n)], dtype=np.float64)
        self.start = fst.start
        if self.start < 0:
            raise AsrkdError("decoding graph has no start state")
        self.rank = self._epsilon_order(src[ilabel == 0], arcs[ilabel == 0, 4].astype(np.int64), n)

    @staticmethod
    def _by_source(arcs: np.ndarray, n: int) -> tuple:
        """(offsets[n + 1], ilabels, olabels, weights, next states) sorted by source state."""
        arcs = arcs[np.argsort(arcs[:, 0], kind="stable")]
        offsets = np.searchsorted(arcs[:, 0], np.arange(n + 1)).astype(np.int64)
        return (offsets, arcs[:, 1].astype(np.int32), arcs[:, 2].astype(np.int32), arcs[:, 3].astype(np.float32),
                arcs[:, 4].astype(np.int32))

    @staticmethod
    def _epsilon_order(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
        """Rank of each state such that every epsilon arc goes from a lower to a higher rank."""
        order = np.argsort(src, kind="stable")
        first = np.searchsorted(src[order], np.arange(n + 1))
        indeg = np.bincount(dst, minlength=n)
        rank, queue, done = np.empty(n, dtype=np.int64), deque(np.flatnonzero(indeg == 0).tolist()), 0
        while queue:
            s = queue.popleft()
            rank[s], done = done, done + 1
            for d in dst[order[first[s]:first[s + 1]]].tolist():
                indeg[d] -= 1
                if indeg[d] == 0:
                    queue.append(d)
        if done < n:
            raise AsrkdError(f"decoding graph has an epsilon cycle ({n - done} states on or after one)")
        return rank


class TokenLattice:
    """Every token (HCLG state, frame) and link (src token, dst token, word, graph cost,
    scaled acoustic cost) of one search, links in an order that rescoring can sweep."""

    def __init__(self, tok_state, frame_offsets, src, dst, olabel, graph, acoustic, final: bool):
        self.tok_state, self.frame_offsets = tok_state, frame_offsets
        self.src, self.dst, self.olabel, self.graph, self.acoustic = src, dst, olabel, graph, acoustic
        self.final = final  # whether a final state was reached; if not, the last frame's tokens end paths

    @property
    def num_links(self) -> int:
        return len(self.src)

    def best_paths(self, g: SearchGraph, ac_ratios, penalties) -> list[tuple[list[int], float] | None]:
        """(word ids, cost) of the best path for every (acoustic ratio a/a0, penalty) column, or
        None where no path ends on the last frame."""
        ac_ratios, penalties = np.asarray(ac_ratios, np.float64), np.asarray(penalties, np.float64)
        last = slice(self.frame_offsets[-2], self.frame_offsets[-1])
        end_cost = g.final[self.tok_state[last]] if self.final else np.zeros(last.stop - last.start)
        back, best, cost = _rescore(len(self.tok_state), self.src, self.dst, self.olabel, self.graph, self.acoustic,
                                    last.start, end_cost, ac_ratios, penalties)
        out = []
        for k in range(len(ac_ratios)):
            if not np.isfinite(cost[k]):
                out.append(None)
                continue
            words, tok = [], int(best[k])
            while tok != 0:
                link = back[tok, k]
                if self.olabel[link]:
                    words.append(int(self.olabel[link]))
                tok = int(self.src[link])
            out.append((words[::-1], float(cost[k])))
        return out


_ROOM = {"per_frame": 2048}


def lattice_search(g: SearchGraph, scores: np.ndarray, beam: float, max_active: int = 2**31 - 1,
                   min_active: int = 20, beam_delta: float = 0.5) -> TokenLattice | None:
    """Search `g` for [T, num_pdfs] already-scaled scores with FasterDecoder's pruning and its
    defaults; None when no token survives to the last frame."""
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    while True:  # room for tokens and links; doubled (and kept for later utterances) when too little
        cap = _ROOM["per_frame"] * (len(scores) + 1)
        res = _search(*g.emitting, *g.epsilon, g.rank, g.start, g.final, scores, beam, max_active, min_active,
                      beam_delta, cap, 2 * cap)
        if res[0] >= 0:
            break
        _ROOM["per_frame"] *= 2
    ntok, nlink, final, frame_offsets, tok_state, src, dst, olabel, graph, acoustic = res
    if frame_offsets[-1] == frame_offsets[-2]:
        return None
    keep, new_id = _live(ntok, src[:nlink], dst[:nlink], frame_offsets[-2])  # drop dead ends: lossless
    src, dst = new_id[src[:nlink][keep]], new_id[dst[:nlink][keep]]
    return TokenLattice(tok_state[:ntok][new_id >= 0], np.searchsorted(np.flatnonzero(new_id >= 0), frame_offsets),
                        src, dst, olabel[:nlink][keep], graph[:nlink][keep], acoustic[:nlink][keep], bool(final))


def warm_up(g: SearchGraph, num_pdfs: int) -> None:
    """Compile the search and the rescoring (numba, cached on disk) before decode jobs fork."""
    lat = lattice_search(g, np.zeros((1, num_pdfs)), beam=1.0)
    if lat is not None:
        lat.best_paths(g, [1.0], [0.0])


@numba.njit(cache=True)
def _search(e_off, e_il, e_ol, e_w, e_next, n_off, n_il, n_ol, n_w, n_next, rank, start, final_cost, scores,
            beam, max_active, min_active, beam_delta, tok_cap, link_cap):
    """FasterDecoder's Decode (GetCutoff, ProcessEmitting, ProcessNonemitting) recording links.
    Returns ntok = -1 when there is no room for the tokens or links."""
    num_frames = scores.shape[0]
    tok_state = np.empty(tok_cap, np.int32)
    tok_cost = np.empty(tok_cap, np.float64)
    src = np.empty(link_cap, np.int32)
    dst = np.empty(link_cap, np.int32)
    olabel = np.empty(link_cap, np.int32)
    graph = np.empty(link_cap, np.float32)
    acoustic = np.empty(link_cap, np.float32)
    links = (src, dst, olabel, graph, acoustic)
    frame_offsets = np.zeros(num_frames + 2, np.int64)
    where = np.full(rank.shape[0], -1, np.int64)  # state -> token on the frame being built
    tok_state[0], tok_cost[0], where[start], ntok, nlink = start, 0.0, 0, 1, 0
    cutoff = beam
    for t in range(num_frames + 1):
        lo = frame_offsets[t]
        ntok, nlink = _process_nonemitting(n_off, n_ol, n_w, n_next, rank, tok_state, tok_cost, where, links, lo, ntok,
                                           nlink, cutoff)
        if ntok < 0:
            return -1, 0, False, frame_offsets, tok_state, src, dst, olabel, graph, acoustic
        hi = ntok
        frame_offsets[t + 1] = hi
        if t == num_frames:
            break
        for tok in range(lo, hi):
            where[tok_state[tok]] = -1
        best_tok, best, weight_cutoff, adaptive_beam = _get_cutoff(tok_cost, lo, hi, beam, max_active, min_active,
                                                                   beam_delta)
        ntok, nlink, cutoff = _process_emitting(e_off, e_il, e_ol, e_w, e_next, scores, t, tok_state, tok_cost, where,
                                                links, lo, hi, best_tok, best, weight_cutoff, adaptive_beam, ntok,
                                                nlink)
        if ntok < 0:
            return -1, 0, False, frame_offsets, tok_state, src, dst, olabel, graph, acoustic
    final = False
    for tok in range(frame_offsets[num_frames], frame_offsets[num_frames + 1]):
        if final_cost[tok_state[tok]] < np.inf:
            final = True
    return ntok, nlink, final, frame_offsets, tok_state, src, dst, olabel, graph, acoustic


@numba.njit(cache=True)
def _process_nonemitting(n_off, n_ol, n_w, n_next, rank, tok_state, tok_cost, where, links, lo, ntok, nlink, cutoff):
    """FasterDecoder's ProcessNonemitting for the frame's tokens from `lo`: epsilon arcs in
    topological order of their source state, each token expanded once with its final cost.
    Returns (ntok, nlink); ntok = -1 when there is no room for the tokens or links."""
    src, dst, olabel, graph, acoustic = links
    heap = [np.int64(0)]
    heap.pop()
    for tok in range(lo, ntok):
        if n_off[tok_state[tok] + 1] > n_off[tok_state[tok]]:
            heap.append((rank[tok_state[tok]] << 32) | tok)
    heapq.heapify(heap)
    while len(heap):
        tok = heapq.heappop(heap) & 0xFFFFFFFF
        s, c = tok_state[tok], tok_cost[tok]
        for a in range(n_off[s], n_off[s + 1]):
            nc = c + n_w[a]
            if nc < cutoff:
                if ntok == tok_state.shape[0] or nlink == src.shape[0]:
                    return -1, nlink
                d = where[n_next[a]]
                if d < 0:
                    d, ntok = ntok, ntok + 1
                    tok_state[d], tok_cost[d], where[n_next[a]] = n_next[a], nc, d
                    if n_off[n_next[a] + 1] > n_off[n_next[a]]:
                        heapq.heappush(heap, (rank[n_next[a]] << 32) | d)
                elif nc < tok_cost[d]:
                    tok_cost[d] = nc
                src[nlink], dst[nlink], olabel[nlink], graph[nlink], acoustic[nlink] = tok, d, n_ol[a], n_w[a], 0.0
                nlink += 1
    return ntok, nlink


@numba.njit(cache=True)
def _get_cutoff(tok_cost, lo, hi, beam, max_active, min_active, beam_delta):
    """FasterDecoder's GetCutoff over the tokens lo..hi: (best token, its cost, weight cutoff,
    adaptive beam), the beam narrowed to keep at most `max_active` tokens, widened to keep `min_active`."""
    best_tok, best = lo, np.inf
    for tok in range(lo, hi):
        if tok_cost[tok] < best:
            best_tok, best = tok, tok_cost[tok]
    n = hi - lo
    weight_cutoff, adaptive_beam = best + beam, beam
    max_cut, min_cut = np.inf, np.inf
    if n > max_active:
        max_cut = np.partition(tok_cost[lo:hi].copy(), max_active)[max_active]
    if max_cut < weight_cutoff:
        weight_cutoff, adaptive_beam = max_cut, max_cut - best + beam_delta
    else:
        if n > min_active:
            min_cut = best if min_active == 0 else np.partition(tok_cost[lo:hi].copy(), min_active)[min_active]
        if min_cut > weight_cutoff:
            weight_cutoff, adaptive_beam = min_cut, min_cut - best + beam_delta
    return best_tok, best, weight_cutoff, adaptive_beam


@numba.njit(cache=True)
def _process_emitting(e_off, e_il, e_ol, e_w, e_next, scores, t, tok_state, tok_cost, where, links, lo, hi, best_tok,
                      best, weight_cutoff, adaptive_beam, ntok, nlink):
    """FasterDecoder's ProcessEmitting of frame `t`'s tokens lo..hi below `weight_cutoff`: the
    best token first bounds the next frame's cutoff. Returns (ntok, nlink, the next cutoff);
    ntok = -1 when there is no room for the tokens or links."""
    src, dst, olabel, graph, acoustic = links
    cutoff = np.inf
    s = tok_state[best_tok]
    for a in range(e_off[s], e_off[s + 1]):
        nc = best + e_w[a] - scores[t, e_il[a] - 1]
        if nc + adaptive_beam < cutoff:
            cutoff = nc + adaptive_beam
    for tok in range(lo, hi):
        c = tok_cost[tok]
        if c >= weight_cutoff:
            continue
        s = tok_state[tok]
        for a in range(e_off[s], e_off[s + 1]):
            ac = -scores[t, e_il[a] - 1]
            nc = c + e_w[a] + ac
            if nc < cutoff:
                if nc + adaptive_beam < cutoff:
                    cutoff = nc + adaptive_beam
                if ntok == tok_state.shape[0] or nlink == src.shape[0]:
                    return -1, nlink, cutoff
                # written out as in the epsilon pass: a per-arc helper taking the arrays, even with numba's
                # inline="always", made the search about 2x slower (30 tri dev utterances: 8.7 s, 4.5 s)
                d = where[e_next[a]]
                if d < 0:
                    d, ntok = ntok, ntok + 1
                    tok_state[d], tok_cost[d], where[e_next[a]] = e_next[a], nc, d
                elif nc < tok_cost[d]:
                    tok_cost[d] = nc
                src[nlink], dst[nlink], olabel[nlink], graph[nlink], acoustic[nlink] = tok, d, e_ol[a], e_w[a], ac
                nlink += 1
    return ntok, nlink, cutoff


@numba.njit(cache=True)
def _live(ntok, src, dst, last):
    """Links into, and new ids of, the tokens from which a last-frame token can be reached (a
    backward sweep: the links are in topological order); other tokens get id -1."""
    live = np.zeros(ntok, np.bool_)
    live[last:] = True
    keep = np.zeros(src.shape[0], np.bool_)
    for link in range(src.shape[0] - 1, -1, -1):
        if live[dst[link]]:
            keep[link] = live[src[link]] = True
    new_id = np.full(ntok, -1, np.int32)
    n = 0
    for tok in range(ntok):
        if live[tok]:
            new_id[tok], n = n, n + 1
    return keep, new_id


@numba.njit(cache=True)
def _rescore(ntok, src, dst, olabel, graph, acoustic, last, end_cost, ac_ratios, penalties):
    """One forward sweep over the links with a cost column per (acoustic ratio, penalty): the
    back-pointer (link) of every token and column, and the best last-frame token and its cost."""
    k = ac_ratios.shape[0]
    cost = np.full((ntok, k), np.inf)
    back = np.full((ntok, k), -1, np.int32)
    cost[0, :] = 0.0
    for link in range(src.shape[0]):
        s, d, word = src[link], dst[link], olabel[link] != 0
        for j in range(k):
            c = cost[s, j] + graph[link] + acoustic[link] * ac_ratios[j]
            if word:
                c += penalties[j]
            if c < cost[d, j]:
                cost[d, j], back[d, j] = c, link
    best = np.zeros(k, np.int64)
    best_cost = np.full(k, np.inf)
    for i in range(end_cost.shape[0]):
        for j in range(k):
            c = cost[last + i, j] + end_cost[i]
            if c < best_cost[j]:
                best[j], best_cost[j] = last + i, c
    return back, best, best_cost
