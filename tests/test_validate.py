"""validate-data-dir, subset, combine and fix on real data dirs, including each bad-input case."""

import shutil

import pytest

from asrkd.data import (combine_data_dirs, fix_data_dir, read_table, subset_data_dir,
                        validate_data_dir, write_table)
from asrkd.utils import AsrkdError
from conftest import run_script, so762_subset


def first_utt(d):
    return next(iter(read_table(d / "wav.scp")))


def test_valid_dir_passes(small_dir):
    assert validate_data_dir(small_dir) == []
    proc = run_script("validate-data-dir", str(small_dir))
    assert proc.returncode == 0, proc.stderr


def test_missing_audio_file(small_dir):
    wav = read_table(small_dir / "wav.scp")
    wav[first_utt(small_dir)] = str(small_dir / "nope.flac")
    write_table(small_dir / "wav.scp", wav)
    errors = validate_data_dir(small_dir)
    assert len(errors) == 1
    assert f"wav.scp:1: utterance '{first_utt(small_dir)}'" in errors[0] and "no such file" in errors[0].lower()


def test_corrupt_audio(small_dir):
    bad = small_dir / "corrupt.flac"
    bad.write_bytes(b"fLaC" + b"\x00garbage" * 100)
    wav = read_table(small_dir / "wav.scp")
    utt = list(wav)[2]
    wav[utt] = str(bad)
    write_table(small_dir / "wav.scp", wav)
    errors = validate_data_dir(small_dir)
    assert len(errors) == 1 and f"wav.scp:3: utterance '{utt}': cannot read" in errors[0]
    proc = run_script("validate-data-dir", str(small_dir))
    assert proc.returncode == 1 and "cannot read" in proc.stderr


def test_unsorted(small_dir):
    lines = (small_dir / "text").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (small_dir / "text").write_text("\n".join(lines) + "\n")
    errors = validate_data_dir(small_dir, check_audio=False)
    assert len(errors) == 1 and "text:2: not sorted" in errors[0]


def test_mismatched_utterance_sets(small_dir):
    text = read_table(small_dir / "text")
    del text[first_utt(small_dir)]
    write_table(small_dir / "text", text)
    errors = validate_data_dir(small_dir, check_audio=False)
    assert len(errors) == 1
    assert "text: utterance set differs from utt2spk: 1 missing" in errors[0]


def test_empty_transcript(small_dir):
    text = read_table(small_dir / "text")
    utt = list(text)[1]
    text[utt] = ""
    write_table(small_dir / "text", text)
    errors = validate_data_dir(small_dir, check_audio=False)
    assert errors == [f"{small_dir / 'text'}:2: empty transcript for utterance '{utt}'"]
    assert fix_data_dir(small_dir) == 1
    assert validate_data_dir(small_dir, check_audio=False) == []
    assert (small_dir / ".backup" / "text").is_file()


def test_spk2utt_mismatch_and_missing_file(small_dir):
    (small_dir / "spk2utt").write_text("0005 000050003\n")
    assert any("spk2utt: does not match utt2spk" in e for e in validate_data_dir(small_dir, check_audio=False))
    (small_dir / "utt2spk").unlink()
    assert validate_data_dir(small_dir) == [f"{small_dir / 'utt2spk'}: missing required file"]


def test_pipe_entries_need_permission(small_dir):
    wav = read_table(small_dir / "wav.scp")
    utt = first_utt(small_dir)
    wav[utt] = f"cat {wav[utt]} |"
    write_table(small_dir / "wav.scp", wav)
    assert "not allowed" in validate_data_dir(small_dir)[0]
    assert validate_data_dir(small_dir, allow_pipes=True) == []


def test_subset_and_combine(tmp_path):
    big = so762_subset(tmp_path / "big", speakers=3, per_spk=4)
    assert len(subset_data_dir(big, tmp_path / "first", first=5)) == 5
    per_spk = subset_data_dir(big, tmp_path / "per", per_spk=1)
    assert len(per_spk) == 3 and len(read_table(tmp_path / "per" / "spk2utt")) == 3
    a = subset_data_dir(big, tmp_path / "a", fraction=0.5, seed=1)
    assert a == subset_data_dir(big, tmp_path / "a2", fraction=0.5, seed=1) and len(a) == 6
    rest = [u for u in read_table(big / "utt2spk") if u not in a]
    utt_list = tmp_path / "rest.list"
    utt_list.write_text("\n".join(rest))
    proc = run_script("subset-data-dir", "--utt-list", str(utt_list), str(big), str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    combine_data_dirs(tmp_path / "ab", [tmp_path / "a", tmp_path / "b"])
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        assert (tmp_path / "ab" / name).read_text() == (big / name).read_text()
    assert validate_data_dir(tmp_path / "ab", check_audio=False) == []
    with pytest.raises(AsrkdError, match="also in another source dir"):
        combine_data_dirs(tmp_path / "aa", [tmp_path / "a", tmp_path / "a2"])
    shutil.rmtree(tmp_path / "aa", ignore_errors=True)
