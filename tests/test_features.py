"""fbank against an independent numpy implementation of Kaldi's definition; CMVN; splicing; jobs."""

import kaldiio
import numpy as np
import pytest

from asrkd.audio import read_audio
from asrkd.data import read_table, write_table
from asrkd.features import (FbankConfig, FeatureReader, compute_cmvn_stats_dir, compute_fbank,
                            compute_fbank_dir, splice)
from asrkd.utils import AsrkdError
from conftest import SO762, YESNO


def kaldi_fbank_reference(samples: np.ndarray, sr: int, num_bins: int = 40, low: float = 20.0) -> np.ndarray:
    """Kaldi compute-fbank-feats (dither 0, snip_edges) written from its definition in float64."""
    x = samples.astype(np.float64) * 32768.0
    win, shift = int(sr * 0.025), int(sr * 0.010)
    nfft = 1 << (win - 1).bit_length()
    n = 1 + (len(x) - win) // shift
    frames = np.stack([x[i * shift: i * shift + win] for i in range(n)])
    frames = frames - frames.mean(axis=1, keepdims=True)                  # DC removal
    pre = frames.copy()
    pre[:, 1:] -= 0.97 * frames[:, :-1]                                   # pre-emphasis
    pre[:, 0] -= 0.97 * frames[:, 0]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / (win - 1))) ** 0.85  # Povey
    power = np.abs(np.fft.rfft(pre * window, nfft)) ** 2

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    nbins = nfft // 2                                                     # Nyquist bin unused
    fft_mel = mel(np.arange(nbins) * sr / nfft)
    lo, hi = mel(low), mel(sr / 2)
    delta = (hi - lo) / (num_bins + 1)
    banks = np.zeros((num_bins, nbins))
    for b in range(num_bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (fft_mel > left) & (fft_mel <= center)
        down = (fft_mel > center) & (fft_mel < right)
        banks[b, up] = (fft_mel[up] - left) / (center - left)
        banks[b, down] = (right - fft_mel[down]) / (right - center)
    energies = power[:, :nbins] @ banks.T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


@pytest.mark.parametrize("path,sr", [(SO762 / "WAVE/SPEAKER0005/000050003.flac", 16000),
                                     (YESNO / "0_0_1_0_1_0_0_1.wav", 8000)])
def test_fbank_matches_numpy_kaldi_reference(path, sr):
    x, file_sr = read_audio(str(path))
    assert file_sr == sr
    ours = compute_fbank(x, FbankConfig(sample_frequency=sr, dither=0.0))
    ref = kaldi_fbank_reference(x, sr)
    assert ours.shape == ref.shape == (1 + (len(x) - sr // 40) // (sr // 100), 40)
    diff = np.abs(ours - ref)
    assert diff.max() < 5e-3, diff.max()
    assert diff.mean() < 1e-4, diff.mean()


def test_dither_is_seeded_per_utterance():
    x, _ = read_audio(str(SO762 / "WAVE/SPEAKER0005/000050003.flac"))
    cfg = FbankConfig(dither=1.0)
    a, b = compute_fbank(x, cfg, "u1"), compute_fbank(x, cfg, "u1")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, compute_fbank(x, cfg, "u2"))
    assert not np.array_equal(a, compute_fbank(x, FbankConfig(dither=0.0), "u1"))


def test_fbank_dir_jobs_cmvn_and_resume(small_dir, tmp_path):
    cfg = FbankConfig(dither=0.0)
    summary = compute_fbank_dir(small_dir, cfg, nj=2)
    assert summary["utterances"] == 6 and summary["skipped"] == 0
    num_frames = read_table(small_dir / "utt2num_frames")
    reader = FeatureReader(small_dir, cmvn=False)
    for utt, feats in reader:
        assert feats.shape == (int(num_frames[utt]), 40) and np.all(np.isfinite(feats))
    # nj=1 gives identical features
    single = tmp_path / "single"
    single.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (single / name).write_text((small_dir / name).read_text())
    compute_fbank_dir(single, cfg, nj=1)
    for utt, feats in FeatureReader(single, cmvn=False):
        assert np.array_equal(feats, reader[utt])

    # per-speaker CMVN: every speaker's normalised frames have zero mean
    compute_cmvn_stats_dir(small_dir)
    normed = FeatureReader(small_dir, cmvn=True)
    by_spk = {}
    for utt, feats in normed:
        by_spk.setdefault(normed.utt2spk[utt], []).append(feats)
    assert len(by_spk) == 2
    for frames in by_spk.values():
        assert np.abs(np.concatenate(frames).mean(axis=0)).max() < 1e-3
    raw = np.concatenate([reader[u] for u in reader.keys()])
    assert np.abs(raw.mean(axis=0)).max() > 1.0  # raw log-mels are far from zero mean

    # a killed run resumes: finished jobs are reused, feats.scp is rebuilt identically
    before = (small_dir / "feats.scp").read_text()
    (small_dir / "feats.scp").unlink()
    next((small_dir / "data").glob("fbank_*/raw_fbank.2.scp")).unlink()
    compute_fbank_dir(small_dir, cfg, nj=2)
    assert (small_dir / "feats.scp").read_text() == before

    # changed options: finished features are not silently reused, nor are finished jobs
    other = FbankConfig(dither=0.0, num_mel_bins=23)
    with pytest.raises(AsrkdError, match="other options"):
        compute_fbank_dir(small_dir, other, nj=2)
    (small_dir / "feats.scp").unlink()
    compute_fbank_dir(small_dir, other, nj=2)
    utt, ark = next(iter(read_table(small_dir / "feats.scp").items()))
    assert kaldiio.load_mat(ark).shape[1] == 23
    compute_cmvn_stats_dir(small_dir)  # stale stats (40 bins) are recomputed
    assert FeatureReader(small_dir, cmvn=True)[utt].shape[1] == 23


def test_unreadable_audio_is_skipped_and_listed(small_dir):
    wav = read_table(small_dir / "wav.scp")
    bad_utt, empty_utt = list(wav)[1], list(wav)[4]
    (small_dir / "bad.flac").write_bytes(b"not audio at all")
    wav[bad_utt] = str(small_dir / "bad.flac")
    import soundfile as sf
    sf.write(small_dir / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    wav[empty_utt] = str(small_dir / "empty.wav")
    write_table(small_dir / "wav.scp", wav)
    summary = compute_fbank_dir(small_dir, FbankConfig(dither=0.0), nj=2, max_skipped=0.5)
    assert summary["skipped"] == 2 and summary["utterances"] == 4
    listed = (small_dir / "log" / "fbank_skipped.txt").read_text().splitlines()
    assert [line.split()[0] for line in listed] == sorted([bad_utt, empty_utt])
    # they have no features; the user's tables keep them (fix-data-dir is an explicit step)
    assert bad_utt not in read_table(small_dir / "feats.scp") and len(read_table(small_dir / "utt2spk")) == 6


def test_splice_context():
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = splice(feats, 2, 1)
    assert out.shape == (4, 12)
    np.testing.assert_array_equal(out[0], np.concatenate([feats[0], feats[0], feats[0], feats[1]]))
    np.testing.assert_array_equal(out[3], np.concatenate([feats[1], feats[2], feats[3], feats[3]]))


def test_upsampling_is_refused_unless_allowed(tmp_path, caplog):
    """8 kHz audio under a 16 kHz config would put half of the mel bins on an empty band."""
    d = tmp_path / "yesno8k"
    d.mkdir()
    wavs = sorted(YESNO.glob("*.wav"))[:3]
    write_table(d / "wav.scp", {w.stem: str(w) for w in wavs})
    write_table(d / "utt2spk", {w.stem: w.stem for w in wavs})
    with pytest.raises(AsrkdError, match="3 of 3 utterances have no features.*8000 Hz audio.*upsampling"):
        compute_fbank_dir(d, FbankConfig(dither=0.0), nj=1)
    caplog.set_level("WARNING")
    compute_fbank_dir(d, FbankConfig(dither=0.0, allow_upsample=True), nj=1, force=True)
    assert len(read_table(d / "feats.scp")) == 3 and "upper mel bins lie on an empty band" in caplog.text
