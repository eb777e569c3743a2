"""Speed perturbation of a data dir (Kaldi perturb_data_dir_speed_3way.sh, Ko et al. 2015).

Each factor f gives a copy of every utterance played f times as fast (duration / f, pitch and
tempo both changed, as sox's `speed`): the samples are resampled by the rational ratio 1/f
(scipy's polyphase filter, float64) and stored as 16-bit FLAC under `<dest>/wav/sp<f>/`.
Utterance and speaker ids get the prefix `sp<f>-` (the unperturbed copy too, `sp1.0-`), so
speaker ids still prefix utterance ids and each copy is a speaker of its own for CMVN.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from asrkd.audio import AudioError, read_audio
from asrkd.data import SPK_INFO, read_table, sort_key, write_data_dir
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, write_list

log = logging.getLogger(__name__)


def prefix(factor: float) -> str:
    return f"sp{factor:.1f}-" if round(factor, 1) == factor else f"sp{factor:g}-"


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Samples played `factor` times as fast: resampled by 1/factor, at the same rate."""
    if factor == 1:
        return x
    ratio = Fraction(1 / factor).limit_denominator(100)
    return resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator)


def check_factors(factors: list[float]) -> None:
    if not factors or any(not 0.5 <= f <= 2 for f in factors) or len(set(factors)) != len(factors):
        raise AsrkdError(f"speed factors {factors}: give distinct factors between 0.5 and 2, e.g. 0.9,1.0,1.1")


def perturb_data_dir_speed(src: str | Path, dest: str | Path, factors: list[float] = (0.9, 1.0, 1.1),
                           allow_pipes: bool = False, max_skipped: float = 0.05, force: bool = False) -> int:
    """`dest`: a data dir with a copy of `src` per speed factor; returns its utterance count.
    Utterances whose audio cannot be read are skipped, counted and listed in log/skipped.txt;
    more than `max_skipped` of them is an error."""
    src, dest, factors = Path(src), Path(dest), [float(f) for f in factors]
    check_factors(factors)
    out = Output(dest, "perturb-speed", {"factors": factors, "allow_pipes": allow_pipes}, {"src": src})
    if out.done(force):
        return len(read_table(dest / "utt2spk"))
    wav, text, utt2spk = (read_table(src / n, allow_empty_value=(n == "text")) for n in ("wav.scp", "text", "utt2spk"))
    spk_info = {n: read_table(src / n) for n in SPK_INFO if (src / n).is_file()}
    tables = {"wav.scp": {}, "text": {}, "utt2spk": {}, **{n: {} for n in spk_info}}
    skipped = []
    with out.writing() as tmp:
        for utt in sorted(utt2spk, key=sort_key):
            try:
                x, sr = read_audio(wav[utt], allow_pipes=allow_pipes) if utt in wav else (None, None)
            except AudioError as e:
                x, sr = None, str(e)
            if x is None:
                skipped.append(f"{utt} {sr or 'not in wav.scp'}")
                continue
            for f in factors:
                p = prefix(f)
                path = tmp / "wav" / p.rstrip("-") / f"{utt}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, np.clip(speed_perturb(x, f), -1, 1), sr, subtype="PCM_16")
                final = (dest / path.relative_to(tmp)).resolve()
                tables["wav.scp"][p + utt], tables["text"][p + utt] = str(final), text.get(utt, "")
                tables["utt2spk"][p + utt] = p + utt2spk[utt]
        if len(skipped) > max_skipped * len(utt2spk):
            raise AsrkdError(f"{src}: {len(skipped)} of {len(utt2spk)} utterances unreadable (more than "
                             f"{max_skipped:.0%}), first: {skipped[0]}")
        for f in factors:
            for name, table in spk_info.items():
                tables[name] |= {prefix(f) + s: v for s, v in table.items()}
        write_data_dir(tmp, tables["wav.scp"], tables["text"], tables["utt2spk"],
                       *(tables.get(n) for n in SPK_INFO))
        write_list(tmp / "log" / "skipped.txt", skipped)
    if skipped:
        log.warning("%s: %d utterances of %s skipped (unreadable audio), listed in log/skipped.txt", dest,
                    len(skipped), src)
    log.info("%s: %d utterances, speeds %s of %s", dest, len(tables["utt2spk"]), ", ".join(f"{f:g}" for f in factors),
             src)
    return len(tables["utt2spk"])
