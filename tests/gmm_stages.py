"""Run the GMM stages on prepared data and print a fingerprint (SHA-1) of every output, for
tests/test_reproducible.py, which runs this script under different threads and kernels.

    python tests/gmm_stages.py YESNO_DIR SO762_DIR OUT_DIR

YESNO_DIR holds train_yesno/, test_yesno/, lang/ and lang_test/ with features (the `yesno`
fixture); SO762_DIR holds train/ with features, lang/ and lang_test/.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "local"))
from gmm_fingerprints import alignment_sha1, model_sha1s, sha1, transforms_sha1  # noqa: E402

from asrkd.decode.decoder import GmmScorer, decode
from asrkd.decode.fmllr import decode_fmllr
from asrkd.decode.graph import make_graph
from asrkd.hmm.align import align
from asrkd.hmm.sat import train_sat
from asrkd.hmm.train import train_lda_mllt, train_mono, train_tri


def model_print(model_dir: Path) -> dict:
    """The recipe's fingerprints of a GMM (local/gmm_fingerprints.py) and of its training history."""
    history = json.loads((model_dir / "log/train.json").read_text())
    return {**model_sha1s(model_dir),
            "history": sha1(json.dumps([{k: v for k, v in h.items() if k != "seconds"} for h in history]).encode())}


def decode_print(decode_dir: Path) -> str:
    files = sorted(decode_dir.glob("hyp/*.txt")) + [decode_dir / "text", decode_dir / "log/decode.log"]
    return sha1(*(f.read_bytes() for f in files))


def sat_prints(data: Path, lang: Path, lang_test: Path, exp: Path) -> dict:
    """The SAT system (tri3) from tri2's alignment: model, fMLLR alignment, two-pass decode."""
    train_sat(data, lang, exp / "tri2_ali", exp / "tri3", num_leaves=150, tot_gauss=400, num_iters=8,
              min_leaf_occ=20, split_silence=False, cluster_leaves=True, fmllr_iters=(2, 4))
    align(data, lang, exp / "tri3", exp / "tri3_ali", nj=2)
    make_graph(lang_test, exp / "tri3", exp / "tri3/graph")
    decode_fmllr(exp / "tri3/graph", exp / "tri3", data, exp / "tri3/decode", lm_weights=[10])
    return {"so762 tri3": model_print(exp / "tri3"), "so762 tri3_ali": alignment_sha1(exp / "tri3_ali"),
            "so762 tri3_ali fmllr": transforms_sha1(exp / "tri3_ali/trans.ark"),
            "so762 tri3 decode": decode_print(exp / "tri3/decode"),
            "so762 tri3 decode fmllr": transforms_sha1(exp / "tri3/decode.fmllr/trans.ark")}


def main(yesno: Path, so762: Path, out: Path) -> dict:
    fp = {}
    exp = out / "yesno"
    train_mono(yesno / "train_yesno", yesno / "lang", exp / "mono", num_iters=15, tot_gauss=100)
    align(yesno / "train_yesno", yesno / "lang", exp / "mono", exp / "mono_ali")
    make_graph(yesno / "lang_test", exp / "mono", exp / "mono/graph")
    decode(exp / "mono/graph", GmmScorer(exp / "mono", yesno / "test_yesno"), yesno / "test_yesno",
           exp / "mono/decode", lm_weights=[5, 10], word_ins_penalties=[0, 1])
    fp["yesno mono"] = model_print(exp / "mono")
    fp["yesno mono_ali"] = alignment_sha1(exp / "mono_ali")
    fp["yesno decode"] = decode_print(exp / "mono/decode")
    exp, data, lang = out / "so762", so762 / "train", so762 / "lang"
    train_mono(data, lang, exp / "mono", num_iters=12, tot_gauss=200)
    align(data, lang, exp / "mono", exp / "mono_ali")
    train_tri(data, lang, exp / "mono_ali", exp / "tri", num_leaves=150, tot_gauss=400, num_iters=8,
              min_leaf_occ=20, split_silence=False, cluster_leaves=True)
    align(data, lang, exp / "tri", exp / "tri_ali")
    train_lda_mllt(data, lang, exp / "tri_ali", exp / "tri2", num_leaves=150, tot_gauss=400, num_iters=8,
                   min_leaf_occ=20, split_silence=False, cluster_leaves=True, mllt_iters=(2, 4))
    align(data, lang, exp / "tri2", exp / "tri2_ali")
    for m in ("tri", "tri2"):
        make_graph(so762 / "lang_test", exp / m, exp / m / "graph")
        decode(exp / m / "graph", GmmScorer(exp / m, data), data, exp / m / "decode", lm_weights=[10])
        fp[f"so762 {m} decode"] = decode_print(exp / m / "decode")
    for m in ("mono", "tri", "tri2"):
        fp[f"so762 {m}"] = model_print(exp / m)
        fp[f"so762 {m}_ali"] = alignment_sha1(exp / f"{m}_ali")
    return fp | sat_prints(data, lang, so762 / "lang_test", exp)


if __name__ == "__main__":
    print(json.dumps(main(*map(Path, sys.argv[1:4]))))
