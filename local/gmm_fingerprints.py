#!/usr/bin/env python3
"""SHA-1 fingerprints of a recipe's GMM stages, to compare two runs bit for bit (on other
CPUs, thread counts or package builds): each GMM's parameters, tree, (LDA+MLLT) feature
transform and (SAT) alignment model and training speakers' fMLLR transforms, each HCLG,
each alignment (utterance ids and senones, whatever the ark's name) and each decode's
hypotheses. Run from a recipe dir after stage 9; prints JSON.

    cd recipes/speechocean762 && python ../../local/gmm_fingerprints.py [--exp exp] > gmm_sha1.json
"""

import argparse
import hashlib
import json
from pathlib import Path

import kaldiio
import numpy as np
import torch


def sha1(*blobs: bytes) -> str:
    return hashlib.sha1(b"".join(blobs)).hexdigest()


def params_sha1(path: Path) -> str:
    """SHA-1 of a GMM file's parameters (not the environment recorded beside them)."""
    state = torch.load(path, weights_only=True)
    return sha1(*(state[k].numpy().tobytes() for k in ("means", "vars", "logw")))


def transforms_sha1(path: Path) -> str:
    """SHA-1 of the speakers and matrices of an fMLLR trans.ark."""
    return sha1(*(k.encode() + np.asarray(v).tobytes() for k, v in sorted(kaldiio.load_ark(str(path)))))


def model_sha1s(model_dir: Path) -> dict:
    """SHA-1 of a GMM-HMM's parameters, of its tree, for an LDA+MLLT system of its feature
    transform, for a SAT system of its alignment model and training speakers' transforms."""
    out = {"params": params_sha1(model_dir / "final.pt"), "tree": sha1((model_dir / "tree").read_bytes())}
    if (model_dir / "final.mat").is_file():
        out["transform"] = sha1(kaldiio.load_mat(str(model_dir / "final.mat")).tobytes())
    if (model_dir / "final.alimdl").is_file():
        out["alimdl"] = params_sha1(model_dir / "final.alimdl")
        out["fmllr"] = transforms_sha1(model_dir / "trans.ark")
    return out


def alignment_sha1(ali_dir: Path) -> str:
    """SHA-1 of an alignment's utterance ids and senones, whatever its ark is named."""
    ali = kaldiio.load_scp(str(ali_dir / "ali.scp"))
    return sha1(*(u.encode() + ali[u].astype(np.int32).tobytes() for u in sorted(ali)))


def fingerprints(exp: Path) -> dict:
    out = {}
    for model in sorted(p.parent for p in exp.glob("*/tree") if (p.parent / "final.pt").is_file()
                        and "_ali" not in p.parent.name):
        out |= {f"{model.name}/{k}": v for k, v in model_sha1s(model).items()}
        if (model / "graph/HCLG.fst").is_file():
            out[f"{model.name}/graph/HCLG.fst"] = sha1((model / "graph/HCLG.fst").read_bytes())
        for d in sorted(model.glob("decode_*")):
            if (d / "text").is_file():
                out[f"{model.name}/{d.name}/text"] = sha1((d / "text").read_bytes())
    for ali_dir in sorted(p.parent for p in exp.glob("*_ali*/ali.scp")):
        out[f"{ali_dir.name}/ali"] = alignment_sha1(ali_dir)
        if (ali_dir / "trans.ark").is_file():
            out[f"{ali_dir.name}/fmllr"] = transforms_sha1(ali_dir / "trans.ark")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp", default="exp", help="the recipe's exp dir")
    print(json.dumps(fingerprints(Path(p.parse_args().exp)), indent=1))


if __name__ == "__main__":
    main()
