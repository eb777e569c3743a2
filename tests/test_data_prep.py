"""Corpus preparation scripts on the real corpora."""

import numpy as np
import pytest
import soundfile as sf

from asrkd.data import read_table, sort_key, subset_data_dir, validate_data_dir
from asrkd.features import FbankConfig, compute_fbank_dir, FeatureReader
from asrkd.utils import AsrkdError
from conftest import SO762, YESNO, run_script, so762_subset


def test_prepare_speechocean762_shipped_subset(tmp_path):
    proc = run_script("local/prepare_speechocean762.py", str(SO762), str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    sizes = {s: len(read_table(tmp_path / s / "text")) for s in ("train", "dev", "test")}
    assert sizes == {"train": 1800, "dev": 200, "test": 400}
    for s in sizes:
        assert validate_data_dir(tmp_path / s, check_audio=False) == []
    assert len(read_table(tmp_path / "dev" / "spk2utt")) == 10
    assert set(read_table(tmp_path / "train" / "spk2gender").values()) <= {"m", "f"}
    first_wav = next(iter(read_table(tmp_path / "test" / "wav.scp").values()))
    assert first_wav.startswith("/") and first_wav.endswith(".flac")


def test_prepare_speechocean762_full_download_layout(tmp_path):
    """The full OpenSLR-101 corpus has train/test only and upper-case .WAV files."""
    corpus = tmp_path / "speechocean762"
    src = so762_subset(tmp_path / "src", "test", speakers=2, per_spk=2)
    (corpus / "test").mkdir(parents=True)
    wav_lines = []
    for utt, path in read_table(src / "wav.scp").items():
        rel = f"WAVE/SPEAKER{read_table(src / 'utt2spk')[utt]}/{utt}.WAV"
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        x, sr = sf.read(path)
        sf.write(corpus / rel, x, sr, format="WAV", subtype="PCM_16")
        wav_lines.append(f"{utt}\t{rel}")
    (corpus / "test" / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    for name in ("text", "utt2spk"):
        (corpus / "test" / name).write_text((src / name).read_text())
    proc = run_script("local/prepare_speechocean762.py", str(corpus), str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "data" / "train").exists()
    assert validate_data_dir(tmp_path / "data" / "test") == []
    assert read_table(tmp_path / "data" / "test" / "text") == read_table(src / "text")


def test_prepare_yesno(tmp_path):
    proc = run_script("local/prepare_yesno.py", str(YESNO), str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    train, test = (read_table(tmp_path / s / "text") for s in ("train_yesno", "test_yesno"))
    assert len(train) == len(test) == 30 and not set(train) & set(test)
    assert train["0_0_0_0_1_1_1_1"] == "NO NO NO NO YES YES YES YES"
    assert max(train) < min(test), "Kaldi's split: the first half of the sorted files is train"
    assert validate_data_dir(tmp_path / "train_yesno") == []
    assert (tmp_path / "local" / "dict" / "lexicon.txt").read_text().split("\n")[:2] == ["YES Y", "NO N"]


def test_prepare_folder_48k_stereo(tmp_path):
    """A user's folder of 48 kHz stereo WAVs: prepared, resampled and mixed down by compute-fbank."""
    src = so762_subset(tmp_path / "src", "dev", speakers=1, per_spk=2)
    folder = tmp_path / "my_audio" / "alice"
    folder.mkdir(parents=True)
    import librosa

    for utt, path in read_table(src / "wav.scp").items():
        x, sr = sf.read(path, dtype="float32")
        y = librosa.resample(x, orig_sr=sr, target_sr=48000, res_type="soxr_hq")
        sf.write(folder / f"{utt}.wav", np.stack([y, y], axis=1), 48000, subtype="PCM_16")
        (folder / f"{utt}.txt").write_text(read_table(src / "text")[utt].lower() + ".\n")
    sf.write(folder / "no_transcript.wav", np.zeros((4800, 2)), 48000)
    proc = run_script("local/prepare_folder.py", str(tmp_path / "my_audio"), str(tmp_path / "mine"))
    assert proc.returncode == 0, proc.stderr
    mine = tmp_path / "mine"
    text = read_table(mine / "text")
    assert sorted(text.values()) == sorted(read_table(src / "text").values())
    assert set(read_table(mine / "utt2spk").values()) == {"alice"}
    assert "no_transcript.wav" in (mine / "log" / "prepare_skipped.txt").read_text()
    assert validate_data_dir(mine) == []

    cfg = FbankConfig(dither=0.0)
    summary = compute_fbank_dir(mine, cfg)
    assert summary["resampled"] == 2
    compute_fbank_dir(src, cfg)
    ref = FeatureReader(src, cmvn=False)
    for utt, feats in FeatureReader(mine, cmvn=False):
        r = ref[utt.split("-", 1)[1]]
        n = min(len(r), len(feats))
        assert abs(len(r) - len(feats)) <= 1
        # 16 kHz -> 48 kHz -> 16 kHz and 16-bit storage: speech-band energies agree closely
        loud = r[:n] > np.percentile(r[:n], 50)
        assert np.mean(np.abs(r[:n] - feats[:n])[loud]) < 0.1


def test_subset_by_frame_fraction(yesno, tmp_path):
    """The paper's 3% subset: whole utterances in seeded random order until that share of the frames."""
    src = yesno / "train_yesno"
    frames = {u: int(n) for u, n in read_table(src / "utt2num_frames").items()}
    total = sum(frames.values())
    a = subset_data_dir(src, tmp_path / "a", frame_fraction=0.2, seed=1)
    assert subset_data_dir(src, tmp_path / "b", frame_fraction=0.2, seed=1) == a  # seeded
    assert subset_data_dir(src, tmp_path / "c", frame_fraction=0.2, seed=2) != a
    got = sum(frames[u] for u in a)
    assert 0.2 * total <= got < 0.2 * total + max(frames.values())  # stops at the first utterance past 20%
    kept = read_table(tmp_path / "a" / "feats.scp")
    assert sorted(kept) == sorted(a) and set(read_table(tmp_path / "a" / "utt2num_frames")) == set(a)
    assert subset_data_dir(src, tmp_path / "all", frame_fraction=1.0) == sorted(frames, key=sort_key)
    with pytest.raises(AsrkdError, match="must be in"):
        subset_data_dir(src, tmp_path / "d", frame_fraction=0.0)
    (tmp_path / "nofr").mkdir()
    for name in ("utt2spk", "wav.scp", "text"):
        (tmp_path / "nofr" / name).write_text((src / name).read_text())
    with pytest.raises(AsrkdError, match="needs utt2num_frames"):
        subset_data_dir(tmp_path / "nofr", tmp_path / "e", frame_fraction=0.5)
