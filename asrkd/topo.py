"""HMM topologies in Kaldi's text format (`data/lang/topo`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TopologyEntry:
    """One HMM shape: `transitions[i]` lists (next_state, prob) of emitting state i.

    The final (non-emitting) state is `num_states`; state i emits pdf class i.
    """

    phones: list[int]
    transitions: list[list[tuple[int, float]]]

    @property
    def num_states(self) -> int:
        return len(self.transitions)


def left_to_right(phones: list[int], num_states: int = 3, self_loop: float = 0.75) -> TopologyEntry:
    """Kaldi's standard phone HMM: each state loops or moves to the next."""
    return TopologyEntry(phones, [[(i, self_loop), (i + 1, 1 - self_loop)] for i in range(num_states)])


def silence(phones: list[int], num_states: int = 5) -> TopologyEntry:
    """Kaldi's silence HMM (gen_topo.pl): the first and middle states are ergodic."""
    p = 1.0 / (num_states - 1)
    trans = [[(j, p) for j in range(num_states - 1)]]
    trans += [[(j, p) for j in range(1, num_states)] for _ in range(1, num_states - 1)]
    trans += [[(num_states - 1, 0.75), (num_states, 0.25)]]
    return TopologyEntry(phones, trans)


def write_topo(path: str | Path, entries: list[TopologyEntry]) -> None:
    lines = ["<Topology>"]
    for e in entries:
        lines += ["<TopologyEntry>", "<ForPhones>", " ".join(map(str, e.phones)), "</ForPhones>"]
        for i, arcs in enumerate(e.transitions):
            arcs_s = " ".join(f"<Transition> {j} {p:g}" for j, p in arcs)
            lines.append(f"<State> {i} <PdfClass> {i} {arcs_s} </State>")
        lines += [f"<State> {e.num_states} </State>", "</TopologyEntry>"]
    lines.append("</Topology>")
    Path(path).write_text("\n".join(lines) + "\n")


def read_topo(path: str | Path) -> list[TopologyEntry]:
    """Parse the subset of Kaldi's topology format that write_topo produces."""
    text = Path(path).read_text()
    entries = []
    for block in re.findall(r"<TopologyEntry>(.*?)</TopologyEntry>", text, re.S):
        phones = [int(p) for p in re.search(r"<ForPhones>(.*?)</ForPhones>", block, re.S).group(1).split()]
        trans = []
        for state in re.findall(r"<State>(.*?)</State>", block, re.S):
            arcs = re.findall(r"<Transition>\s+(\d+)\s+([0-9.eE+-]+)", state)
            if "<PdfClass>" in state:
                trans.append([(int(j), float(p)) for j, p in arcs])
        entries.append(TopologyEntry(phones, trans))
    return entries
