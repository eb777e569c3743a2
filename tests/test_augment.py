"""Speed perturbation (perturb-speed): copies of the right length and pitch, Kaldi's id
prefixes, a valid data dir that features and alignment accept, and one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asrkd.augment import perturb_data_dir_speed, speed_perturb
from asrkd.cli import main
from asrkd.data import read_table, validate_data_dir, write_table
from asrkd.utils import AsrkdError
from conftest import ROOT, YESNO


def test_speed_perturb_changes_duration_and_pitch():
    sr = 16000
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * 440 * t)
    for f in (0.9, 1.1):
        y = speed_perturb(x, f)
        assert abs(len(y) - len(x) / f) <= 1
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        peak = np.argmax(spectrum) * sr / len(y)  # Hz
        assert abs(peak - 440 * f) < 3, (f, peak)
    assert speed_perturb(x, 1.0) is x


def test_perturbed_data_dir(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(ROOT / "local/prepare_yesno.py"), str(YESNO), str(data)], check=True)
    src = data / "train_yesno"
    keep = sorted(read_table(src / "utt2spk"))[:3]
    for name in ("wav.scp", "text", "utt2spk"):
        write_table(src / name, {k: v for k, v in read_table(src / name).items() if k in keep})
    write_table(src / "spk2utt", {"global": " ".join(keep)})
    write_table(src / "spk2age", {"global": "30"})
    main(["perturb-speed", str(src), str(tmp_path / "sp")])
    sp = tmp_path / "sp"
    assert validate_data_dir(sp) == []
    utt2spk = read_table(sp / "utt2spk")
    assert sorted(utt2spk) == sorted(f"sp{f}-{u}" for f in ("0.9", "1.0", "1.1") for u in keep)
    assert set(utt2spk.values()) == {"sp0.9-global", "sp1.0-global", "sp1.1-global"}
    assert read_table(sp / "spk2age") == {"sp0.9-global": "30", "sp1.0-global": "30", "sp1.1-global": "30"}
    assert read_table(sp / "text")["sp1.1-" + keep[0]] == read_table(src / "text")[keep[0]]
    wav = read_table(sp / "wav.scp")
    x, sr = sf.read(read_table(src / "wav.scp")[keep[0]])
    for f in (0.9, 1.0, 1.1):
        y, sr_y = sf.read(wav[f"sp{f:.1f}-{keep[0]}"])
        assert sr_y == sr and abs(len(y) - len(x) / f) <= 1
    mtime = (sp / "wav.scp").stat().st_mtime_ns
    assert perturb_data_dir_speed(src, sp) == 9 and (sp / "wav.scp").stat().st_mtime_ns == mtime  # done: skipped
    with pytest.raises(AsrkdError, match=r"made with factors=\[0.9, 1.0, 1.1\] \(now \[0.9, 1.0\]\)"):
        perturb_data_dir_speed(src, sp, [0.9, 1.0])
    for bad in ([0.9, 0.9], [0.2], []):
        with pytest.raises(AsrkdError, match="speed factors"):
            perturb_data_dir_speed(src, tmp_path / "bad", bad)
    # unreadable audio is skipped and listed, not a crash
    write_table(src / "wav.scp", {**read_table(src / "wav.scp"), keep[1]: str(tmp_path / "missing.wav")})
    assert perturb_data_dir_speed(src, tmp_path / "sp2", [1.1], max_skipped=0.5) == 2
    assert keep[1] in (tmp_path / "sp2/log/skipped.txt").read_text()
    with pytest.raises(AsrkdError, match="1 of 3 utterances unreadable"):  # over the default 5%
        perturb_data_dir_speed(src, tmp_path / "sp3", [1.1])
