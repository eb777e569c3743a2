"""`asrkd <step>`: a thin argparse front for each recipe step."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from asrkd.jobs import add_job_options, job_config
from asrkd.significance import ADULT_AGE
from asrkd.utils import AsrkdError, setup_logging

log = logging.getLogger("asrkd")


COMMANDS: list[tuple] = []  # (name, add_parser keywords, argument adder, action), in definition order


def command(name: str, args, **parser_kw):
    """Register the decorated `cmd_*` function as `asrkd NAME`; `args(s)` adds its arguments."""
    def register(func):
        COMMANDS.append((name, parser_kw, args, func))
        return func
    return register


def _jobs(a, kind: str = "default"):
    """The job config of a command's `kind` of jobs, from --cmd-config and --cmd."""
    return job_config(a.cmd_config, a.cmd, kind)


def _args_validate_data_dir(s) -> None:
    s.add_argument("data_dir", help="data dir (Kaldi layout: wav.scp, text, utt2spk, spk2utt; optional feats.scp, "
                   "cmvn.scp, utt2num_frames, utt2dur, spk2gender, spk2age)")
    s.add_argument("--no-audio", action="store_true", help="skip reading every audio file")
    s.add_argument("--allow-pipes", action="store_true", help="allow 'cmd |' entries in wav.scp")


@command("validate-data-dir", args=_args_validate_data_dir,
         help="Kaldi's data dir checks (validate_data_dir.sh): each error on stderr, exit status 1 if any")
def cmd_validate_data_dir(a):
    from asrkd.data import validate_data_dir

    errors = validate_data_dir(a.data_dir, check_audio=not a.no_audio, allow_pipes=a.allow_pipes)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        raise SystemExit(1)
    log.info("%s: valid", a.data_dir)


def _args_subset_data_dir(s) -> None:
    s.add_argument("src", help="source data dir")
    s.add_argument("dest", help="output data dir: src's tables filtered to the kept utterances and their speakers "
                   "(not cmvn.scp: rerun compute-cmvn-stats)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--first", type=int, help="keep this many utterances, the first in utt2spk order")
    g.add_argument("--per-spk", type=int, help="keep this many utterances of each speaker, its first ones")
    g.add_argument("--fraction", type=float, help="seeded fraction of the utterances, in (0, 1]")
    g.add_argument("--frame-fraction", type=float, help="seeded whole utterances holding this fraction of the frames, "
                   "in (0, 1] (needs utt2num_frames: compute-fbank)")
    g.add_argument("--utt-list", help="file of utterance ids (whitespace-separated, all in src)")
    s.add_argument("--seed", type=int, default=0, help="random seed of --fraction and --frame-fraction")
    s.add_argument("--force", action="store_true", help="redo dest even when made with the same options; "
                   "needed to replace one made with other options")


@command("subset-data-dir", args=_args_subset_data_dir,
         help="keep some utterances of a data dir (Kaldi's subset_data_dir.sh) -> DEST")
def cmd_subset_data_dir(a):
    from asrkd.data import subset_data_dir

    utt_list = Path(a.utt_list).read_text().split() if a.utt_list else None
    kept = subset_data_dir(a.src, a.dest, first=a.first, per_spk=a.per_spk, fraction=a.fraction,
                           utt_list=utt_list, seed=a.seed, frame_fraction=a.frame_fraction, force=a.force)
    log.info("%s: %d utterances", a.dest, len(kept))


def _args_combine_data_dirs(s) -> None:
    s.add_argument("dest", help="output data dir")
    s.add_argument("srcs", nargs="+", help="source data dirs")
    s.add_argument("--force", action="store_true", help="redo dest even when made from the same dirs; needed to "
                   "replace one made from other dirs")


@command("combine-data-dirs", args=_args_combine_data_dirs,
         help="union of data dirs (Kaldi's combine_data.sh) -> DEST; an utterance in two dirs, or a speaker with "
              "two genders, is an error")
def cmd_combine_data_dirs(a):
    from asrkd.data import combine_data_dirs

    combine_data_dirs(a.dest, a.srcs, force=a.force)


def _args_fix_data_dir(s) -> None:
    s.add_argument("data_dir", help="data dir to fix in place")


@command("fix-data-dir", args=_args_fix_data_dir,
         help="keep utterances present in every table and with a transcript (Kaldi's fix_data_dir.sh), in place; "
              "the old tables go to DATA_DIR/.backup when any is removed")
def cmd_fix_data_dir(a):
    from asrkd.data import fix_data_dir

    fix_data_dir(a.data_dir)


def _args_prepare_lang(s) -> None:
    s.add_argument("--lexicon", required=True, help="corpus lexicon: WORD PHONE PHONE ... per line")
    s.add_argument("--text", action="append", default=[], help="transcripts whose words need "
                   "pronunciations (repeatable); words the lexicon lacks are looked up in CMUdict")
    s.add_argument("--sil-prob", type=float, default=0.5, help="probability of optional silence between words "
                   "in L.fst, in [0, 1)")
    s.add_argument("--no-cmudict", action="store_true", help="no CMUdict look-up: words the lexicon lacks map "
                   "to <UNK>")
    s.add_argument("--keep-stress", action="store_true", help="keep the ARPAbet stress digits (default: removed, "
                   "39 phones)")
    s.add_argument("--force", action="store_true", help="redo lang_dir even when made with the same options and "
                   "inputs; needed to replace one made with others")
    s.add_argument("lang_dir", help="output lang dir: phones.txt, words.txt, topo, L.fst, L_disambig.fst, phones/, "
                   "oov.txt")


@command("prepare-lang", args=_args_prepare_lang,
         help="lexicon -> data/lang (phones, words, topo, L.fst); words without a pronunciation map to <UNK>")
def cmd_prepare_lang(a):
    from asrkd.lang import build_lexicon, prepare_lang
    from asrkd.outputs import Output

    out = Output(a.lang_dir, "prepare-lang",
                 {"sil_prob": a.sil_prob, "cmudict": not a.no_cmudict, "keep_stress": a.keep_stress},
                 {"lexicon": a.lexicon, **{f"text_{i}": t for i, t in enumerate(a.text)}})
    if out.done(a.force):
        return
    lexicon, oov = build_lexicon(a.lexicon, a.text, use_cmudict=not a.no_cmudict, keep_stress=a.keep_stress)
    for word, count in oov.most_common():
        log.warning("no pronunciation for '%s' (%d occurrences): mapped to <UNK>", word, count)
    prepare_lang(lexicon, out, sil_prob=a.sil_prob, oov_counts=oov)


def _args_train_lm(s) -> None:
    s.add_argument("--text", required=True, help="training transcripts (Kaldi text); words not in the lang dir "
                   "become <UNK>")
    s.add_argument("--dev-text", help="transcripts for the perplexity report")
    s.add_argument("--order", type=int, default=3, help="n-gram order (1: maximum-likelihood unigram)")
    s.add_argument("--lang", required=True, help="lang dir (prepare-lang): the vocabulary, words.txt")
    s.add_argument("--lm-dir", required=True, help="output dir of the LM: lm_train.txt, lm_<order>gram.arpa, "
                   "report.json")
    s.add_argument("--lang-test", required=True, help="output lang dir: a copy of --lang plus G.fst")
    s.add_argument("--force", action="store_true", help="redo --lang-test even when made with the same order and "
                   "inputs; needed to replace one made with others")


@command("train-lm", args=_args_train_lm,
         help="Kneser-Ney ARPA (kaldingram) and lang_test/G.fst (kaldilm); prints train and dev perplexity as JSON")
def cmd_train_lm(a):
    from asrkd.lm import make_lang_test, train_lm
    from asrkd.outputs import Output

    out = Output(a.lang_test, "train-lm", {"order": a.order},
                 {"text": a.text, "lang": a.lang, "dev_text": a.dev_text})
    if out.done(a.force):
        return
    report = train_lm(a.text, a.lang, a.lm_dir, order=a.order, dev_text=a.dev_text)
    make_lang_test(a.lang, report["arpa"], out)
    print(json.dumps({k: report[k] for k in ("train", "dev") if k in report}, indent=1))


def _args_compute_fbank(s) -> None:
    s.add_argument("--config", help="fbank YAML (default: Kaldi defaults, 40 bins)")
    add_job_options(s, nj="jobs: the data dir is split into this many parts")
    s.add_argument("--allow-pipes", action="store_true", help="allow 'cmd |' entries in wav.scp")
    s.add_argument("--max-skipped", type=float, default=0.05,
                   help="largest share of utterances whose audio may be skipped (Kaldi: 5%%)")
    s.add_argument("--force", action="store_true", help="recompute even when feats.scp exists; needed when it was "
                   "made with another config")
    s.add_argument("data_dirs", nargs="+", help="data dirs; the arks go to DIR/data/, skipped utterances to "
                   "DIR/log/fbank_skipped.txt")


@command("compute-fbank", args=_args_compute_fbank,
         help="log-mel filterbank features -> feats.scp, utt2num_frames, utt2dur")
def cmd_compute_fbank(a):
    from asrkd.config import load_config
    from asrkd.features import FbankConfig, compute_fbank_dir

    cfg = load_config(FbankConfig, a.config)
    for d in a.data_dirs:
        compute_fbank_dir(d, cfg, nj=a.nj, allow_pipes=a.allow_pipes, force=a.force, max_skipped=a.max_skipped,
                          jobs=_jobs(a))


def _args_compute_cmvn_stats(s) -> None:
    s.add_argument("--force", action="store_true", help="recompute even when cmvn.scp is newer than feats.scp")
    add_job_options(s, nj="jobs: the speakers are split into this many parts")
    s.add_argument("data_dirs", nargs="+", help="data dirs with feats.scp (compute-fbank)")


@command("compute-cmvn-stats", args=_args_compute_cmvn_stats,
         help="per-speaker CMVN stats -> cmvn.scp")
def cmd_compute_cmvn_stats(a):
    from asrkd.features import compute_cmvn_stats_dir

    for d in a.data_dirs:
        compute_cmvn_stats_dir(d, force=a.force, nj=a.nj, jobs=_jobs(a))


def _args_train_mono(s) -> None:
    s.add_argument("--num-iters", type=int, default=30, help="EM iterations, with Viterbi realignment on "
                   "Kaldi's schedule")
    s.add_argument("--tot-gauss", type=int, default=1000, help="total Gaussians, reached by splitting over the "
                   "first 3/4 of the iterations")
    s.add_argument("--seed", type=int, default=0, help="random seed of the flat-start (equal) alignment")
    s.add_argument("--force", action="store_true", help="retrain even when a finished model with the same options "
                   "and inputs exists")
    for name, text in (("data_dir", "training data dir with features (compute-fbank, compute-cmvn-stats)"),
                       ("lang_dir", "lang dir (prepare-lang)"),
                       ("exp_dir", "output model dir: final.pt, tree, log/train.json")):
        s.add_argument(name, help=text)


@command("train-mono", args=_args_train_mono,
         help="flat-start monophone GMM-HMM")
def cmd_train_mono(a):
    from asrkd.hmm.train import train_mono

    train_mono(a.data_dir, a.lang_dir, a.exp_dir, num_iters=a.num_iters, tot_gauss=a.tot_gauss,
               seed=a.seed, force=a.force)


def _args_train_tri(s) -> None:
    s.add_argument("--num-leaves", type=int, default=1500, help="senones: the leaves the decision tree is grown to")
    s.add_argument("--tot-gauss", type=int, default=8000, help="total Gaussians, reached by splitting over the "
                   "first 5/7 of the iterations")
    s.add_argument("--num-iters", type=int, default=35, help="EM iterations, with Viterbi realignment every 10th")
    s.add_argument("--min-leaf-occ", type=float, default=100.0, help="minimum frames per tree leaf")
    s.add_argument("--no-split-silence", action="store_true",
                   help="one senone per silence phone state, not split by context (roots.txt not-split)")
    s.add_argument("--cluster-leaves", action="store_true",
                   help="merge each root's leaves that cost less than the smallest split gained")
    s.add_argument("--force", action="store_true", help="retrain even when a finished model with the same options "
                   "and inputs exists")
    for name, text in (("data_dir", "training data dir with features (compute-fbank, compute-cmvn-stats)"),
                       ("lang_dir", "lang dir (prepare-lang)"),
                       ("ali_dir", "alignment dir to start from (align, e.g. exp/mono_ali)"),
                       ("exp_dir", "output model dir: final.pt, tree, log/train.json")):
        s.add_argument(name, help=text)


@command("train-tri", args=_args_train_tri,
         help="decision tree + tied-state triphone GMM-HMM from an alignment")
def cmd_train_tri(a):
    from asrkd.hmm.train import train_tri

    train_tri(a.data_dir, a.lang_dir, a.ali_dir, a.exp_dir, **_tied_options(a))


def _tied_options(a, iters: str | None = None) -> dict:
    """The options of train-tri that train-lda-mllt and train-sat share; `iters` names their
    list of EM iterations, which must lie within --num-iters."""
    if iters and any(i > a.num_iters for i in getattr(a, iters)):
        raise AsrkdError(f"--{iters.replace('_', '-')} {getattr(a, iters)}: beyond --num-iters {a.num_iters}")
    return {"num_leaves": a.num_leaves, "tot_gauss": a.tot_gauss, "num_iters": a.num_iters,
            "min_leaf_occ": a.min_leaf_occ, "split_silence": not a.no_split_silence,
            "cluster_leaves": a.cluster_leaves, "force": a.force, **({iters: tuple(getattr(a, iters))} if iters else {})}


def _iterations(s: str) -> list[int]:
    try:
        iters = sorted({int(x) for x in s.split(",") if x})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated iteration numbers, got {s!r}") from None
    if not iters or iters[0] < 1:
        raise argparse.ArgumentTypeError(f"expected iteration numbers from 1, got {s!r}")
    return iters


def _args_train_lda_mllt(s) -> None:
    _args_train_tri(s)
    s.add_argument("--context", type=int, default=3, choices=range(0, 11), metavar="N",
                   help="frames spliced each side of the centre before LDA (default %(default)s)")
    s.add_argument("--lda-dim", type=int, default=40, help="dimensions kept by LDA (default %(default)s)")
    s.add_argument("--mllt-iters", type=_iterations, default=[2, 4, 6, 12],
                   help="EM iterations at which the MLLT is re-estimated (default 2,4,6,12)")


@command("train-lda-mllt", args=_args_train_lda_mllt,
         help="tied-state triphone GMM-HMM on LDA+MLLT features (tri2) from an alignment")
def cmd_train_lda_mllt(a):
    from asrkd.hmm.train import train_lda_mllt

    train_lda_mllt(a.data_dir, a.lang_dir, a.ali_dir, a.exp_dir, context=a.context, lda_dim=a.lda_dim,
                   **_tied_options(a, "mllt_iters"))


def _args_train_sat(s) -> None:
    _args_train_tri(s)
    s.add_argument("--fmllr-iters", type=_iterations, default=[2, 4, 6, 12],
                   help="EM iterations at which the speakers' fMLLR transforms are re-estimated (default 2,4,6,12)")


@command("train-sat", args=_args_train_sat,
         help="speaker-adaptive (fMLLR) tied-state triphone GMM-HMM (tri3) from an LDA+MLLT alignment")
def cmd_train_sat(a):
    from asrkd.hmm.sat import train_sat

    train_sat(a.data_dir, a.lang_dir, a.ali_dir, a.exp_dir, **_tied_options(a, "fmllr_iters"))


def _args_align(s) -> None:
    s.add_argument("--beam", type=float, default=10.0, help="alignment beam (acoustic scale 0.1)")
    s.add_argument("--retry-beam", type=float, default=40.0, help="beam of the second try for an utterance that "
                   "fails at --beam")
    add_job_options(s, nj="alignment jobs: the utterances are split into this many parts")
    s.add_argument("--force", action="store_true", help="realign even when a finished alignment with the same "
                   "options and inputs exists")
    for name, text in (("data_dir", "data dir with features"),
                       ("lang_dir", "lang dir (prepare-lang)"),
                       ("model_dir", "GMM-HMM dir (final.pt + tree, final.mat where LDA+MLLT, final.alimdl where "
                                     "SAT: train-mono, train-tri, train-lda-mllt, train-sat)"),
                       ("ali_dir", "output alignment dir: ali.{ark,scp}, phones.ctm, pdf_counts, priors, "
                                   "align_report.json, the model's files; trans.ark (fMLLR) for a SAT model")):
        s.add_argument(name, help=text)


@command("align", args=_args_align,
         help="Viterbi forced alignment: senone per frame, phone CTM, priors")
def cmd_align(a):
    from asrkd.hmm.align import align

    align(a.data_dir, a.lang_dir, a.model_dir, a.ali_dir, beam=a.beam, retry_beam=a.retry_beam, force=a.force,
          nj=a.nj, jobs=_jobs(a))


def _args_make_fmllr_feats(s) -> None:
    s.add_argument("--transform-dir", help="dir with the speakers' fMLLR transforms (trans.ark): the alignment dir "
                   "for training data, decode-fmllr's <decode_dir>.fmllr for tuning and test data; without it, "
                   "the system's speaker-independent features")
    add_job_options(s, nj="jobs: the speakers are split into this many parts")
    s.add_argument("--force", action="store_true", help="rewrite even when finished features from the same inputs "
                   "exist")
    for name, text in (("data_dir", "data dir with fbank features and CMVN stats"),
                       ("model_dir", "GMM-HMM dir whose features to write (final.mat: LDA+MLLT; without: deltas)"),
                       ("out_dir", "output data dir: the source's tables and feats.scp (compute its CMVN stats "
                                   "next)")):
        s.add_argument(name, help=text)


@command("make-fmllr-feats", args=_args_make_fmllr_feats,
         help="a data dir of the features a GMM system sees, fMLLR-adapted per speaker: inputs for the networks")
def cmd_make_fmllr_feats(a):
    from asrkd.hmm.fmllr_feats import make_fmllr_feats

    make_fmllr_feats(a.data_dir, a.model_dir, a.out_dir, a.transform_dir, nj=a.nj, jobs=_jobs(a), force=a.force)


def _args_make_graph(s) -> None:
    s.add_argument("--force", action="store_true", help="rebuild even when a finished graph from the same inputs "
                   "exists")
    for name, text in (("lang_dir", "lang dir with G.fst (train-lm's --lang-test)"),
                       ("model_dir", "model dir whose tree the graph is for (a GMM-HMM dir)"),
                       ("graph_dir", "output dir: HCLG.fst, words.txt, phones.txt, tree, graph_info.json")):
        s.add_argument(name, help=text)


@command("make-graph", args=_args_make_graph,
         help="HCLG.fst for a model's tree and a lang dir with G.fst")
def cmd_make_graph(a):
    from asrkd.decode.graph import make_graph

    make_graph(a.lang_dir, a.model_dir, a.graph_dir, force=a.force)


def _priors(a):
    """An alignment dir's log priors; --priors names the dir (or, as before, its `priors` file)."""
    from asrkd.hmm.alignment import AlignmentDir

    path = Path(a.priors)
    return AlignmentDir(path.parent if path.name == "priors" and path.is_file() else path).log_priors


def _scorer(a, data_dir, need_priors: bool = True):
    from asrkd.decode.decoder import GmmScorer, NnetScorer, PosteriorScorer

    if sum(map(bool, (a.model_dir, a.posteriors, a.nnet))) != 1:
        raise AsrkdError("give one of --model-dir (a GMM), --nnet (neural models) or --posteriors (stored log posteriors)")
    if (a.posteriors or a.nnet) and not a.priors and need_priors:
        raise AsrkdError("--nnet and --posteriors need --priors (the training alignment dir)")
    if a.transform_dir and not a.model_dir:
        raise AsrkdError("--transform-dir goes with a SAT --model-dir")
    if a.posteriors:
        return PosteriorScorer(a.posteriors, _priors(a))
    if a.nnet:
        return NnetScorer(a.nnet, data_dir, _priors(a) if a.priors else None)
    return GmmScorer(a.model_dir, data_dir, _priors(a) if a.priors else None, transforms=a.transform_dir)


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _args_search(s) -> None:
    """The options of a decode: the LM weight / penalty grid, the search, the jobs, the dirs."""
    s.add_argument("--lm-weights", type=_floats, default=[10.0], help="LM weights to try, e.g. 8,10,12 (acoustic "
                   "scale 1/LMWT)")
    s.add_argument("--word-ins-penalties", type=_floats, default=[0.0], help="word insertion penalties to try, "
                   "e.g. 0,0.5,1")
    s.add_argument("--tuned-on", help="decode dir (dev) whose chosen LM weight and penalty to use")
    s.add_argument("--beam", type=float, default=13.0, help="search beam of a single pass")
    s.add_argument("--grid-beam", type=float, default=14.0, help="search beam of a grid's lattice search")
    s.add_argument("--max-active", type=int, default=15000, help="most tokens kept per frame")
    s.add_argument("--max-widen", type=int, default=3,
                   help="times a grid is widened by one step on a side while the chosen pair lies on that edge "
                        "(0: never)")
    s.add_argument("--max-skipped", type=float, default=0.05,
                   help="share of utterances that may be skipped (no scores or no surviving path) before it is an "
                        "error")
    add_job_options(s, nj="decoding jobs: the utterances are split into this many parts")
    s.add_argument("--force", action="store_true", help="redecode even when a finished decode with the same options "
                   "and inputs exists")
    for name, text in (("graph_dir", "graph dir (make-graph) of the model's tree"),
                       ("data_dir", "data dir with features, and text to score against"),
                       ("decode_dir", "output dir: hyp/<LMWT>_<WIP>.txt and wer_<LMWT>_<WIP> per pair; text, wer "
                                      "and best_lmwt of the chosen pair; decode_info.json")):
        s.add_argument(name, help=text)


def _search_options(a) -> dict:
    return {"lm_weights": a.lm_weights, "word_ins_penalties": a.word_ins_penalties, "beam": a.beam,
            "grid_beam": a.grid_beam, "max_active": a.max_active, "max_widen": a.max_widen,
            "max_skipped": a.max_skipped}


def _args_decode(s) -> None:
    _add_model_args(s)
    _args_search(s)


@command("decode", args=_args_decode,
         help="Viterbi decoding with HCLG, WER per LM weight / insertion penalty")
def cmd_decode(a):
    from asrkd.decode.decoder import decode

    decode(a.graph_dir, _scorer(a, a.data_dir), a.data_dir, a.decode_dir, tuned_on=a.tuned_on, nj=a.nj,
           force=a.force, jobs=_jobs(a), **_search_options(a))


def _args_decode_fmllr(s) -> None:
    s.add_argument("--model-dir", required=True, help="SAT GMM-HMM dir (train-sat): final.pt, final.alimdl, tree, "
                   "final.mat")
    s.add_argument("--silence-weight", type=float, default=0.01,
                   help="weight of silence frames in the fMLLR statistics (default %(default)s)")
    _args_search(s)


@command("decode-fmllr", args=_args_decode_fmllr,
         help="two-pass decoding of a SAT model: speaker-independent pass into DECODE_DIR.si, fMLLR transforms "
              "into DECODE_DIR.fmllr, adapted pass into DECODE_DIR")
def cmd_decode_fmllr(a):
    from asrkd.decode.fmllr import decode_fmllr

    decode_fmllr(a.graph_dir, a.model_dir, a.data_dir, a.decode_dir, tuned_on=a.tuned_on,
                 silence_weight=a.silence_weight, nj=a.nj, jobs=_jobs(a), force=a.force, **_search_options(a))


def _args_score(s) -> None:
    for name, text in (("data_dir", "data dir: text is the reference; utt2spk, where present, gives per-speaker "
                                    "WER"),
                       ("hyp_text", "hypotheses (Kaldi text: utterance id, then words)"),
                       ("out_dir", "output dir: wer, wer_details/per_utt, wer_details/per_spk")):
        s.add_argument(name, help=text)


@command("score", args=_args_score,
         help="WER/SER of a hypothesis text against data_dir/text")
def cmd_score(a):
    from asrkd.decode.score import format_wer, score

    print("\n".join(format_wer(score(a.data_dir, a.hyp_text, a.out_dir))))


def _args_frame_accuracy(s) -> None:
    _add_model_args(s)
    s.add_argument("--per-member", action="store_true", help="with several --nnet: also each member's accuracy")
    s.add_argument("--force", action="store_true", help="recompute even when a finished JSON with the same options "
                   "and inputs exists")
    for name, text in (("data_dir", "data dir with features"),
                       ("ali_dir", "alignment dir of that data (align) with the model's tree: the reference"),
                       ("out_json", "output JSON: frame accuracy (senone level, and phone level with the alignment's "
                                    "tree), frames, utterances")):
        s.add_argument(name, help=text)


@command("frame-accuracy", args=_args_frame_accuracy,
         help="argmax senone vs a forced alignment")
def cmd_frame_accuracy(a):
    from asrkd.decode.score import check_alignment, ensemble_frame_accuracy, frame_accuracy
    from asrkd.environment import environment
    from asrkd.hmm.alignment import AlignmentDir
    from asrkd.outputs import Output

    scorer, ali = _scorer(a, a.data_dir, need_priors=not a.nnet), AlignmentDir(a.ali_dir)
    check_alignment(ali, scorer)
    out = Output(a.out_json, "frame-accuracy", {"per_member": a.per_member},
                 {"data": a.data_dir, "ali": a.ali_dir, "priors": a.priors, **scorer.sources})
    if out.done(a.force):
        return
    if a.nnet and a.per_member:
        r = ensemble_frame_accuracy(scorer, ali, a.nnet)
    else:
        r = frame_accuracy({u: scorer.log_posterior(u).argmax(1) for u in scorer.keys()}, ali)
    r["environment"] = environment()
    with out.writing() as tmp:
        tmp.write_text(json.dumps(r, indent=2) + "\n")
    log.info("frame accuracy %.2f%% over %d frames of %d utterances", 100 * r["frame_accuracy"], r["frames"], r["utts"])


def _nnet_config(a):
    from asrkd.config import load_config
    from asrkd.nnet.config import NnetConfig

    return load_config(NnetConfig, a.config)


def _args_train_dnn(s) -> None:
    s.add_argument("--seed", type=int, default=0, help="random seed of the weights, minibatch order and dropout")
    s.add_argument("--soft-targets", action="append", help="soft-target dir (make-soft-targets): train a "
                   "student on it; repeat for teacher switching (one teacher's targets per minibatch)")
    s.add_argument("--teacher-nnet", action="append", help="model dir: distil from these models' averaged "
                   "softmax(z/T), run on each minibatch (mixed up by the config's teacher_mixup); repeat per member")
    s.add_argument("--temperature", type=float, help="distillation temperature with --teacher-nnet (default: "
                   "the config's); stored soft targets bring their own")
    _add_nnet_sets(s)


@command("train-dnn", args=_args_train_dnn,
         help="one senone DNN: hard targets, or distillation with --soft-targets")
def cmd_train_dnn(a):
    from asrkd.nnet.runtime import leave_group
    from asrkd.nnet.train import train_model

    train_model(_nnet_config(a), a.data_dir, a.ali_dir, a.dev_dir, a.dev_ali_dir, a.exp_dir, seed=a.seed,
                soft_dirs=a.soft_targets, device=a.device, force=a.force, teacher_dirs=a.teacher_nnet,
                temperature=a.temperature)
    leave_group()


def _args_train_ensemble(s) -> None:
    add_job_options(s)
    _add_nnet_sets(s)


@command("train-ensemble", args=_args_train_ensemble,
         help="num_members DNNs differing in seed (and architecture, with member_archs) -> EXP/member_<k>")
def cmd_train_ensemble(a):
    from asrkd.nnet.ensemble import train_ensemble

    train_ensemble(_nnet_config(a), a.data_dir, a.ali_dir, a.dev_dir, a.dev_ali_dir, a.exp_dir, device=a.device,
                   force=a.force, jobs=_jobs(a, "train"))


def _args_select_model(s) -> None:
    s.add_argument("--link", required=True, help="symlink to create or replace (exp/nnet/distilled)")
    s.add_argument("model_dirs", nargs="+", help="model dirs (train-dnn) to choose among, by their best epoch's dev "
                   "frame accuracy")


@command("select-model", args=_args_select_model,
         help="link the model with the best dev frame accuracy (e.g. of a T sweep)")
def cmd_select_model(a):
    from asrkd.nnet.ensemble import select_model

    best = select_model(a.model_dirs, a.link)
    print(f"{a.link} -> {best}")


def _args_make_soft_targets(s) -> None:
    s.add_argument("--config", help="nnet YAML (temperatures, top_k, ensemble_mean)")
    s.add_argument("--nnet", action="append", required=True, help="member model dir (repeat)")
    s.add_argument("--per-member", type=float, action="append", metavar="T",
                   help="also each member's own soft targets at T -> OUT/soft_T<T>_member_<k> (teacher switching); "
                        "repeatable")
    add_job_options(s, nj="jobs: the utterances are split into this many shards")
    s.add_argument("--force", action="store_true", help="redo soft-target dirs even when finished with the same "
                   "options and inputs")
    s.add_argument("data_dir", help="data dir with features (the student's training data)")
    s.add_argument("out_dir", help="output dir of the soft_T<T> dirs (ids.{ark,scp}, probs.{ark,scp}, info.json)")


@command("make-soft-targets", args=_args_make_soft_targets,
         help="members' averaged softmax(z/T), top-k -> OUT/soft_T<T>")
def cmd_make_soft_targets(a):
    import torch

    from asrkd.nnet.expdir import NnetExpDir
    from asrkd.nnet.model import load_nnet
    from asrkd.nnet.runtime import cpu_setup, resolve_precision
    from asrkd.nnet.soft_targets import make_soft_targets

    cfg = _nnet_config(a)
    cpu_setup()
    exp = NnetExpDir(a.out_dir)
    out = {t: exp.soft_targets(t) for t in cfg.temperatures}
    for t in a.per_member or []:  # each member's own soft targets, for teacher switching
        out |= {(t, k): (t, exp.soft_targets(t, k), k) for k in range(len(a.nnet))}
    make_soft_targets([load_nnet(d) for d in a.nnet], a.data_dir, out, k=cfg.top_k, mean=cfg.ensemble_mean,
                      bf16=resolve_precision(cfg.precision, torch.device("cpu")) == "bf16", force=a.force,
                      sources={f"nnet_{i}": d for i, d in enumerate(a.nnet)}, nj=a.nj, jobs=_jobs(a))


def _args_nnet_forward(s) -> None:
    s.add_argument("--nnet", action="append", required=True, help="model dir (repeat for an ensemble)")
    s.add_argument("data_dir", help="data dir with features")
    s.add_argument("out_dir", help="output dir: logpost.{ark,scp} (for decode --posteriors)")


@command("nnet-forward", args=_args_nnet_forward,
         help="log posteriors of a model (or ensemble) -> OUT/logpost.{ark,scp}")
def cmd_nnet_forward(a):
    from asrkd.decode.decoder import NnetScorer, write_log_posteriors

    n = write_log_posteriors(NnetScorer(a.nnet, a.data_dir), a.out_dir)
    log.info("%s: log posteriors of %d utterances", a.out_dir, n)


def _years(s: str) -> int:
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of years, got {s!r}")
    return int(s)


def _add_adult_age(s) -> None:
    s.add_argument("--adult-age", type=_years, default=ADULT_AGE,
                   help="speakers of this age and over count as adults in the age groups (default %(default)s)")


def _args_perturb_speed(s) -> None:
    s.add_argument("--factors", type=_floats, default=[0.9, 1.0, 1.1],
                   help="speed factors, one copy each; 1.0 is the unperturbed copy (default 0.9,1.0,1.1)")
    s.add_argument("--allow-pipes", action="store_true", help="allow 'cmd |' entries in wav.scp")
    s.add_argument("--max-skipped", type=float, default=0.05,
                   help="fail when more than this share of the utterances has unreadable audio (default 0.05)")
    s.add_argument("--force", action="store_true", help="redo even when a finished copy with the same factors exists")
    s.add_argument("src_dir", help="data dir with wav.scp, text, utt2spk")
    s.add_argument("dest_dir", help="new data dir: utterances and speakers prefixed sp<factor>-, audio in wav/")


@command("perturb-speed", args=_args_perturb_speed,
         help="speed-perturbed copies of a data dir (perturb_data_dir_speed_3way.sh)")
def cmd_perturb_speed(a):
    from asrkd.augment import perturb_data_dir_speed

    perturb_data_dir_speed(a.src_dir, a.dest_dir, a.factors, a.allow_pipes, a.max_skipped, force=a.force)


def _args_wer_bootci(s) -> None:
    _add_adult_age(s)
    s.add_argument("--json", help="also write the results to this JSON file")
    s.add_argument("data_dir", help="the data dir decoded: utt2spk (speakers to resample), spk2age where present")
    s.add_argument("decode_dirs", nargs="+", metavar="decode_dir",
                   help="one or two decode dirs of data_dir (their wer_details/per_utt); with two, the "
                        "probability that the second improves on the first")


@command("wer-bootci", args=_args_wer_bootci,
         help="bootstrap confidence intervals of WER, and the probability of improvement (compute-wer-bootci)")
def cmd_wer_bootci(a):
    from asrkd.significance import format_bootci, wer_bootci

    if len(a.decode_dirs) > 2:
        raise AsrkdError(f"wer-bootci: one or two decode dirs, got {len(a.decode_dirs)}")
    res = wer_bootci(a.data_dir, a.decode_dirs, a.adult_age)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    print("\n".join(format_bootci(res)))


def _args_compare(s) -> None:
    s.add_argument("--gmm", required=True, help="GMM system dir (exp/tri)")
    s.add_argument("--nnet", required=True, help="neural dir with member_<k>, ensemble, distilled (exp/nnet)")
    s.add_argument("--sets", default="dev,test", help="tuning set and test set names (decode_<set> dirs)")
    s.add_argument("--stage-times", help="run.sh's exp/log/stage_times.tsv, for the time-per-stage table")
    s.add_argument("--data", help="dir holding the sets' data dirs (data): their utt2spk makes the bootstrap "
                   "resample speakers (else utterances), their spk2age gives per-age-group results")
    _add_adult_age(s)
    s.add_argument("out_dir", help="output dir: results.json, results.md and the plots (PNG)")


@command("compare", args=_args_compare,
         help="baseline / ensemble / distilled table -> OUT/results.{md,json}, plots")
def cmd_compare(a):
    from asrkd.report import compare

    compare(a.gmm, a.nnet, a.out_dir, sets=tuple(a.sets.split(",")), stage_times=a.stage_times, data_root=a.data,
            adult_age=a.adult_age)
    print(Path(a.out_dir, "results.md").read_text())


def _args_compare_senones(s) -> None:
    s.add_argument("--lang", required=True, help="lang dir (phones.txt, phones/silence.int)")
    s.add_argument("--system", action="append", required=True, help="NAME:GMM_DIR:ALI_DIR:DNN_DIR (repeat); the "
                   "GMM and DNN dirs hold frame_accuracy_<set>.json and decode_<set>/")
    s.add_argument("--sets", default="dev,test", help="tuning set and test set names (frame_accuracy_<set>.json, "
                   "decode_<set> dirs)")
    s.add_argument("out_dir", help="output dir: senones.json, senones.md")


@command("compare-senones", args=_args_compare_senones,
         help="tree variants: senones, GMM and DNN accuracy -> OUT/senones.md")
def cmd_compare_senones(a):
    from asrkd.report import senone_inventory

    systems = {}
    for spec in a.system:
        name, *dirs = spec.split(":")
        if len(dirs) != 3:
            raise AsrkdError(f"--system {spec!r}: expected NAME:GMM_DIR:ALI_DIR:DNN_DIR")
        systems[name] = dirs
    senone_inventory(systems, a.lang, a.out_dir, sets=tuple(a.sets.split(",")))
    print(Path(a.out_dir, "senones.md").read_text())


def _args_seed_spread(s) -> None:
    s.add_argument("--nnet", default="exp/nnet", help="the recipe's neural dir (member_<k>, ensemble, distilled, ...)")
    s.add_argument("--sets", default="dev,test", help="tuning set and test set names (frame_accuracy_<set>.json, "
                   "decode_<set> dirs)")
    s.add_argument("--level", type=float, default=0.95, help="confidence level of the Welch t-intervals")
    s.add_argument("--out", help="output JSON (default: SPREAD_DIR/spread.json)")
    s.add_argument("spread_dir", help="dir of the extra seeds and decodes (exp/spread)")


@command("seed-spread", args=_args_seed_spread,
         help="seeds' mean and std of the headline numbers, and which stated differences exceed them -> "
              "SPREAD_DIR/spread.json (local/seed_spread.sh)")
def cmd_seed_spread(a):
    from asrkd.spread import format_spread, seed_spread

    res = seed_spread(a.nnet, a.spread_dir, a.out, sets=tuple(a.sets.split(",")), level=a.level)
    print("\n".join(format_spread(res)))


def _args_run_jobs(s) -> None:
    s.add_argument("--job", nargs=2, action="append", required=True, metavar=("LOG", "COMMAND"),
                   help="a job: a shell command and the log file its output goes to; repeat per job")
    s.add_argument("--kind", choices=("default", "train"), default="default",
                   help="the job config's section that sizes the jobs (train: training jobs)")
    add_job_options(s, nj="local jobs run at once (Slurm runs the array as it can)")
    s.add_argument("work_dir", help="dir for the jobs' bookkeeping and Slurm's logs (e.g. exp/nnet/log/sweep)")


@command("run-jobs", args=_args_run_jobs,
         help="independent shell commands as jobs: local processes or one Slurm job array (Kaldi's run.pl/slurm.pl)")
def cmd_run_jobs(a):
    import hashlib

    from asrkd.jobs import asrkd_argv, note_new_process_threads, run_jobs, shell_job

    key = hashlib.sha1(repr(a.job).encode()).hexdigest()[:12]
    cfg = _jobs(a, a.kind)
    fork = cfg.cmd == "local" and any(asrkd_argv(command) for _, command in a.job)
    if fork:  # local asrkd jobs are forked from here and share these imports (2-3 s each)
        import asrkd.decode.decoder  # noqa: F401  (decode, frame-accuracy: torch, kaldifst, the models)
        import asrkd.nnet.train  # noqa: F401  (train-dnn)

        note_new_process_threads()
    run_jobs(shell_job, [(*j, main if fork else None) for j in a.job], "run-jobs", a.work_dir, cfg, parallel=a.nj,
             key=key)


def _args_env(s) -> None:
    s.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="the device to name")


@command("env", args=_args_env,
         help="commit, package versions, CPU, vector ISA, threads, device as JSON (bug reports)")
def cmd_env(a):
    from asrkd.environment import environment
    from asrkd.nnet.runtime import pick_device

    print(json.dumps(environment(pick_device(a.device)), indent=2))


def _add_nnet_sets(s) -> None:
    s.add_argument("--config", help="nnet YAML (conf/nnet.yaml; default: asrkd.nnet.config.NnetConfig)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device to train on "
                   "(auto: cuda where torch has one)")
    s.add_argument("--force", action="store_true", help="retrain even when a finished model with the same "
                   "config and inputs exists")
    for name, text in (("data_dir", "training data dir with features"),
                       ("ali_dir", "its alignment dir (align): the hard senone targets"),
                       ("dev_dir", "dev data dir: frame accuracy after each epoch (learning-rate halving, best "
                                   "epoch)"),
                       ("dev_ali_dir", "its alignment dir, with the same tree as ali_dir"),
                       ("exp_dir", "output dir: the model (final.pt, nnet.yaml, log/train.json), or "
                                   "train-ensemble's member_<k> model dirs")):
        s.add_argument(name, help=text)

def _add_model_args(s):
    s.add_argument("--model-dir", help="GMM-HMM dir (final.pt + tree), e.g. exp/tri")
    s.add_argument("--transform-dir", help="dir with the speakers' fMLLR transforms (trans.ark: the set's alignment "
                   "dir, or a decode_<set>.fmllr) for a SAT --model-dir")
    s.add_argument("--posteriors", action="append", help="log-posterior scp of a model (nnet-forward); repeat for an "
                   "ensemble (arithmetic mean of the members' probabilities)")
    s.add_argument("--nnet", action="append", help="neural model dir (final.pt); repeat for an ensemble (arithmetic "
                   "mean of the members' probabilities)")
    s.add_argument("--priors", help="alignment dir (or its priors file): posterior / prior = scaled likelihood; "
                   "needed with --posteriors, and with --nnet to decode; a GMM's frame accuracy is the argmax of "
                   "likelihood x prior")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asrkd", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging (default: info)")
    p.add_argument("--threads", type=int, help="CPU threads of torch and the GMM kernels (default: "
                   "OMP_NUM_THREADS, else all cores); decoding jobs use one each")
    sub = p.add_subparsers(dest="step", required=True)
    for name, parser_kw, args, func in COMMANDS:
        s = sub.add_parser(name, **parser_kw)
        args(s)
        s.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.threads is not None:  # read by torch (intra-op threads) and by `cpu_setup`
        if args.threads < 1:
            log.error("--threads must be at least 1, got %d", args.threads)
            raise SystemExit(1)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        if "torch" in sys.modules:  # a job of run-jobs, forked with torch already imported
            sys.modules["torch"].set_num_threads(args.threads)
    if os.environ.get("ASRKD_FORCE") == "1" and hasattr(args, "force"):
        args.force = True  # a recipe run with --force true
    try:
        args.func(args)
    except AsrkdError as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    except OSError as e:  # read-only output, disk full, missing input files: one line, no traceback
        name = f"{e.filename}: " if e.filename else ""
        log.error("%s%s", name, e.strerror or e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
