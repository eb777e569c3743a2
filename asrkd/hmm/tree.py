"""Phonetic decision trees: which senone (tied HMM state) a phone in context uses.

As in Kaldi's cluster-phones + build-tree: phones are clustered bottom-up on their
single-Gaussian statistics to give the questions (phone sets); then every (phone, HMM
state) root is split greedily on the question about the left or right phone that gains
the most likelihood, until the tree has the requested number of leaves. Roots of
"not-split" phones (roots.txt; e.g. silence) stay one leaf. Optionally the leaves of each
root are then clustered bottom-up: leaves whose merge loses less likelihood than the
smallest split gained share a senone (build-tree's cluster threshold). Leaves are numbered
as senones (pdf ids), root by root. A monophone system is the tree with no splits.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numba
import numpy as np

from asrkd.hmm import fpmath
from asrkd.hmm.fpmath import LOG_2PI
from asrkd.utils import AsrkdError, atomic_file



@dataclass
class GaussStats:
    """Zeroth, first and second order statistics of frames, one row per key."""

    occ: np.ndarray  # [K]
    s1: np.ndarray  # [K, D]
    s2: np.ndarray  # [K, D]

    def sum(self, mask=None) -> "GaussStats":
        if mask is None:
            return GaussStats(self.occ.sum(), self.s1.sum(0), self.s2.sum(0))
        return GaussStats(self.occ[mask].sum(), self.s1[mask].sum(0), self.s2[mask].sum(0))


@numba.njit(cache=True)
def _question_sums(member, x):
    """[Q, D] sums of the rows of x [K, D] that each question's 0/1 row of member [Q, K] selects,
    in row order (a fixed rounding where a matrix product's depends on the BLAS kernel)."""
    out = np.zeros((member.shape[0], x.shape[1]))
    for q in range(member.shape[0]):
        for k in range(member.shape[1]):
            if member[q, k]:
                out[q] += x[k]
    return out


def gauss_loglik(occ, s1, s2, var_floor) -> np.ndarray:
    """Log-likelihood of the frames under their own ML diagonal Gaussian (broadcasts over rows)."""
    occ = np.maximum(occ, 1e-10)
    var = np.maximum(s2 / occ[..., None] - (s1 / occ[..., None]) ** 2, var_floor)
    logdet = fpmath.log_rows(np.ascontiguousarray(var.reshape(-1, var.shape[-1]))).reshape(var.shape[:-1])
    return -0.5 * occ * (s1.shape[-1] * (1 + LOG_2PI) + logdet)


def cluster_phones(stats: dict[int, GaussStats], var_floor: np.ndarray) -> list[frozenset[int]]:
    """Bottom-up clustering of phones by likelihood loss; every cluster formed (singletons
    included, the set of all phones excluded) is a question."""
    clusters = {frozenset([p]): s for p, s in stats.items() if s.occ > 0}
    questions = list(clusters)

    def loss(a, b):
        sa, sb = clusters[a], clusters[b]
        merged = gauss_loglik(sa.occ + sb.occ, sa.s1 + sb.s1, sa.s2 + sb.s2, var_floor)
        return gauss_loglik(sa.occ, sa.s1, sa.s2, var_floor) + gauss_loglik(sb.occ, sb.s1, sb.s2, var_floor) - merged

    while len(clusters) > 2:
        keys = sorted(clusters, key=sorted)
        a, b = min(((a, b) for i, a in enumerate(keys) for b in keys[i + 1:]), key=lambda ab: loss(*ab))
        sa, sb = clusters.pop(a), clusters.pop(b)
        clusters[a | b] = GaussStats(sa.occ + sb.occ, sa.s1 + sb.s1, sa.s2 + sb.s2)
        questions.append(a | b)
    return questions


class ContextTree:
    """(phone context, HMM state) -> senone. `roots[(phone, state)]` is a node id; a node is
    ("leaf", senone) or ("split", context position, question, yes node, no node)."""

    def __init__(self, context_width: int, central_position: int, questions: list[frozenset[int]],
                 roots: dict[tuple[int, int], int], nodes: list[tuple]):
        self.context_width, self.central_position = context_width, central_position
        self.questions, self.roots, self.nodes = questions, roots, nodes
        self.num_pdfs = len({n[1] for n in nodes if n[0] == "leaf"})  # clustered leaves share a senone
        self.pdf_info = [None] * self.num_pdfs  # senone -> (phone, state) of its root
        for (phone, state), node in roots.items():
            for leaf in self._leaves(node):
                self.pdf_info[self.nodes[leaf][1]] = (phone, state)

    @classmethod
    def monophone(cls, phone_states: dict[int, int]) -> "ContextTree":
        """One senone per (phone, state): `phone_states[phone]` is its number of HMM states."""
        roots, nodes = {}, []
        for phone in sorted(phone_states):
            for state in range(phone_states[phone]):
                roots[(phone, state)] = len(nodes)
                nodes.append(("leaf", len(nodes)))
        return cls(1, 0, [], roots, nodes)

    def _leaves(self, node: int):
        n = self.nodes[node]
        if n[0] == "leaf":
            yield node
        else:
            yield from self._leaves(n[3])
            yield from self._leaves(n[4])

    def senone(self, context: tuple[int, ...], state: int) -> int:
        """Senone of HMM state `state` of the central phone in `context` (0 = utterance edge)."""
        node = self.roots.get((context[self.central_position], state))
        if node is None:
            raise AsrkdError(f"tree has no root for phone {context[self.central_position]} state {state}")
        while self.nodes[node][0] == "split":
            _, pos, q, yes, no = self.nodes[node]
            node = yes if context[pos] in self.questions[q] else no
        return self.nodes[node][1]

    def write(self, path: str | Path) -> None:
        """Readable text: a header, the questions, the roots, then one line per node."""
        lines = [f"asrkd-tree context_width {self.context_width} central_position {self.central_position} "
                 f"num_pdfs {self.num_pdfs}"]
        lines += [f"question {i} " + " ".join(map(str, sorted(q))) for i, q in enumerate(self.questions)]
        lines += [f"root {p} {s} {n}" for (p, s), n in sorted(self.roots.items())]
        lines += [f"{n[0]} {i} " + " ".join(map(str, n[1:])) for i, n in enumerate(self.nodes)]
        with atomic_file(path) as f:
            f.write("\n".join(lines) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "ContextTree":
        lines = Path(path).read_text().splitlines()
        head = lines[0].split()
        if not head or head[0] != "asrkd-tree":
            raise AsrkdError(f"{path}:1: not an asrkd tree file")
        width, central = int(head[2]), int(head[4])
        questions, roots, nodes = [], {}, []
        for n, line in enumerate(lines[1:], 2):
            f = line.split()
            try:
                if f[0] == "question":
                    questions.append(frozenset(map(int, f[2:])))
                elif f[0] == "root":
                    roots[(int(f[1]), int(f[2]))] = int(f[3])
                elif f[0] == "leaf":
                    nodes.append(("leaf", int(f[2])))
                elif f[0] == "split":
                    nodes.append(("split", *map(int, f[2:6])))
                else:
                    raise ValueError(f[0])
            except (ValueError, IndexError):
                raise AsrkdError(f"{path}:{n}: bad tree line: {line!r}") from None
        return cls(width, central, questions, roots, nodes)


def merge_leaves(occ: np.ndarray, s1: np.ndarray, s2: np.ndarray, thresh: float, var_floor: np.ndarray) -> list[list[int]]:
    """Bottom-up clustering of leaves (rows of the stats): merge the pair that loses the least
    likelihood while that loss is below `thresh`. Returns the groups of row indices."""
    groups = [[i] for i in range(len(occ))]
    occ, s1, s2 = occ.astype(np.float64).copy(), s1.astype(np.float64).copy(), s2.astype(np.float64).copy()
    while len(groups) > 1:
        own = gauss_loglik(occ, s1, s2, var_floor)
        merged = gauss_loglik(occ[:, None] + occ[None], s1[:, None] + s1[None], s2[:, None] + s2[None], var_floor)
        cost = own[:, None] + own[None] - merged
        cost[np.tril_indices(len(groups))] = np.inf
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        if cost[i, j] >= thresh:
            break
        groups[i] += groups.pop(j)
        occ[i], s1[i], s2[i] = occ[i] + occ[j], s1[i] + s1[j], s2[i] + s2[j]
        occ, s1, s2 = (np.delete(x, j, 0) for x in (occ, s1, s2))
    return groups


def _question_members(questions: list[frozenset[int]], num_phones: int) -> np.ndarray:
    """[Q, num_phones] 0/1 matrix: row q marks the phones of question q."""
    member = np.zeros((len(questions), num_phones))
    for i, q in enumerate(questions):
        member[i, sorted(q)] = 1.0
    return member


def _best_split(idx: np.ndarray, contexts: np.ndarray, stats: GaussStats, member: np.ndarray, positions: list[int],
                min_occ: float, var_floor: np.ndarray) -> tuple:
    """(gain, position, question, yes mask) of the best split of the keys `idx`: the question
    about a context phone at one of `positions` that gains the most likelihood while keeping
    `min_occ` frames on both sides; (0.0, None, None, None) when none gains."""
    parent = gauss_loglik(stats.occ[idx].sum(), stats.s1[idx].sum(0), stats.s2[idx].sum(0), var_floor)
    best = (0.0, None, None, None)
    for pos in positions:
        m = member[:, contexts[idx, pos]]  # [Q, k]
        yo = _question_sums(m, stats.occ[idx, None])[:, 0]
        y1, y2 = _question_sums(m, stats.s1[idx]), _question_sums(m, stats.s2[idx])
        no, n1, n2 = stats.occ[idx].sum() - yo, stats.s1[idx].sum(0) - y1, stats.s2[idx].sum(0) - y2
        gain = gauss_loglik(yo, y1, y2, var_floor) + gauss_loglik(no, n1, n2, var_floor) - parent
        gain[(yo < min_occ) | (no < min_occ)] = -np.inf
        q = int(np.argmax(gain))
        if gain[q] > best[0]:
            best = (float(gain[q]), pos, q, m[q] > 0)
    return best


def _tree_roots(contexts: np.ndarray, states: np.ndarray, phone_states: dict[int, int],
                central_position: int) -> tuple[list, dict, dict]:
    """(nodes, roots, members): a leaf node for every (phone, state) of the topology, seen or
    not, and the keys (rows of `contexts`) each root holds."""
    nodes, roots, members = [], {}, {}
    for phone in sorted(phone_states):
        for state in range(phone_states[phone]):
            idx = np.flatnonzero((contexts[:, central_position] == phone) & (states == state))
            roots[(phone, state)] = len(nodes)
            members[len(nodes)] = idx
            nodes.append(["leaf"])
    return nodes, roots, members


def _root_splits(roots: dict, members: dict, best_split, not_split: frozenset[int]) -> list:
    """Heap of the best split of every root with more than one key, but those of `not_split` phones."""
    heap = []
    for (phone, _), node in roots.items():
        idx = members[node]
        if len(idx) > 1 and phone not in not_split:
            gain, pos, q, yes = best_split(idx)
            if pos is not None:
                heapq.heappush(heap, (-gain, node, pos, q, yes))
    return heap


def _grow_tree(nodes: list, members: dict, heap: list, best_split, num_leaves: int) -> list[float]:
    """Split leaves greedily by the largest gain on `heap` until the tree has `num_leaves`
    leaves or no split is left; `nodes` and `members` get the children. Returns the gains."""
    num = len(nodes)
    gains = []
    while heap and num < num_leaves:
        gain, node, pos, q, yes = heapq.heappop(heap)
        gains.append(-gain)
        idx = members.pop(node)
        children = []
        for part in (idx[yes], idx[~yes]):
            members[len(nodes)] = part
            children.append(len(nodes))
            nodes.append(["leaf"])
            if len(part) > 1:
                g, p2, q2, y2 = best_split(part)
                if p2 is not None:
                    heapq.heappush(heap, (-g, children[-1], p2, q2, y2))
        nodes[node] = ["split", pos, q, *children]
        num += 1
    return gains


def _root_leaves(nodes: list, root: int) -> list[int]:
    """The leaves under `root`, yes branch first."""
    leaves, stack = [], [root]
    while stack:
        n = stack.pop()
        if nodes[n][0] == "split":
            stack += [nodes[n][4], nodes[n][3]]
        else:
            leaves.append(n)
    return leaves


def _number_senones(nodes: list, roots: dict, members: dict, stats: GaussStats, cluster: bool, gains: list[float],
                    var_floor: np.ndarray) -> list[tuple]:
    """Number the leaves (with `cluster` the groups of merged leaves, `merge_leaves` below the
    smallest of `gains`) as senones, root by root, in `nodes`; returns each senone's stats."""
    leaf_stats, senone = [], 0
    for root in roots.values():
        leaves = _root_leaves(nodes, root)
        sums = [(stats.occ[members[n]].sum(), stats.s1[members[n]].sum(0), stats.s2[members[n]].sum(0)) for n in leaves]
        groups = [[i] for i in range(len(leaves))]
        if cluster and len(leaves) > 1:
            groups = merge_leaves(*(np.stack(x) for x in zip(*sums)), min(gains), var_floor)
        for g in sorted(groups):
            for i in g:
                nodes[leaves[i]] = ["leaf", senone]
            leaf_stats.append(tuple(sum(sums[i][x] for i in g) for x in range(3)))
            senone += 1
    return leaf_stats


def build_tree(contexts: np.ndarray, states: np.ndarray, stats: GaussStats, questions: list[frozenset[int]],
               num_leaves: int, min_occ: float, var_floor: np.ndarray, phone_states: dict[int, int],
               central_position: int = 1, not_split: frozenset[int] = frozenset(),
               cluster: bool = False) -> tuple[ContextTree, GaussStats]:
    """Grow the tree by best likelihood gain until `num_leaves` leaves (or no split keeps
    `min_occ` frames on both sides); roots of `not_split` phones are never split; with
    `cluster`, each root's leaves are then merged (`merge_leaves`) below the smallest split's
    gain. Rows of `contexts` [K, W] / `states` [K] are the seen (context, state) keys with
    their statistics. Returns the tree and per-senone stats."""
    width = contexts.shape[1]
    num_phones = max(max(phone_states), int(contexts.max())) + 1
    member = _question_members(questions, num_phones)
    positions = [p for p in range(width) if p != central_position]
    best_split = partial(_best_split, contexts=contexts, stats=stats, member=member, positions=positions,
                         min_occ=min_occ, var_floor=var_floor)
    nodes, roots, members = _tree_roots(contexts, states, phone_states, central_position)
    if num_leaves < len(nodes):
        raise AsrkdError(f"num_leaves {num_leaves} is below the number of (phone, state) roots {len(nodes)}")
    heap = _root_splits(roots, members, best_split, not_split)
    gains = _grow_tree(nodes, members, heap, best_split, num_leaves)
    leaf_stats = _number_senones(nodes, roots, members, stats, cluster, gains, var_floor)
    tree = ContextTree(width, central_position, questions, roots, [tuple(n) for n in nodes])
    occ, s1, s2 = (np.stack(x) for x in zip(*leaf_stats))
    return tree, GaussStats(occ, s1, s2)
