"""tympan.audio on real FSDD recordings and on files broken in the ways real files break."""

import numpy as np
import pytest
import soundfile as sf

from tympan import audio
from tympan.errors import AudioError, TympanError


@pytest.fixture(scope="module")
def wav(fsdd_mirror):
    return fsdd_mirror / "fsdd" / "recordings" / "7_jackson_3.wav"


def test_load_real_wav_keeps_its_rate(wav):
    samples, rate = audio.load(wav)
    assert rate == 8000
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size == sf.info(wav).frames
    assert 0 < np.abs(samples).max() <= 1


def test_load_resamples_to_the_requested_rate(wav):
    native, _ = audio.load(wav)
    samples, rate = audio.load(wav, sample_rate=16000)
    assert rate == 16000
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - 2 * native.size) <= 1
    # Same sound at twice the rate: the even samples track the original closely.
    assert np.corrcoef(samples[::2][: native.size], native[: samples[::2].size])[0, 1] > 0.95


def test_resample_is_a_no_op_at_the_same_rate():
    samples = np.ones(100, dtype=np.float32)
    assert audio.resample(samples, 8000, 8000) is samples
    assert audio.resample(samples, 8000, 4000).shape == (50,)


def test_stereo_is_mixed_down_to_mono(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone, -0.5 * tone], axis=1), 8000, subtype="FLOAT")
    samples, rate = audio.load(path)
    assert rate == 8000 and samples.shape == (8000,)
    np.testing.assert_allclose(samples, 0.25 * tone, atol=1e-6)


@pytest.mark.parametrize("fmt, tolerance", [("flac", 1e-6), ("ogg", None)])
def test_flac_and_ogg_round_trip(tmp_path, wav, fmt, tolerance):
    original, rate = audio.load(wav)
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, original, rate)
    samples, got_rate = audio.load(path)
    assert got_rate == rate and samples.shape == original.shape
    if tolerance:  # lossless
        np.testing.assert_allclose(samples, original, atol=tolerance)
    else:  # lossy Vorbis: the same sound, not the same samples
        assert np.corrcoef(samples, original)[0, 1] > 0.9
    from_bytes, bytes_rate = audio.decode_bytes(path.read_bytes(), name=path.name)
    assert bytes_rate == rate
    np.testing.assert_array_equal(from_bytes, samples)


def test_decode_bytes_resamples(wav):
    samples, rate = audio.decode_bytes(wav.read_bytes(), sample_rate=16000)
    assert rate == 16000
    np.testing.assert_array_equal(samples, audio.load(wav, 16000)[0])


def _assert_audio_error(path, match):
    with pytest.raises(AudioError, match=match) as info:
        audio.load(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value, TympanError)


def test_missing_file(tmp_path):
    _assert_audio_error(tmp_path / "nope.wav", "no such file")


def test_directory_is_not_a_file(tmp_path):
    _assert_audio_error(tmp_path, "not a file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    _assert_audio_error(path, "empty")


def test_wav_cut_inside_its_header(tmp_path, wav):
    path = tmp_path / "cut.wav"
    path.write_bytes(wav.read_bytes()[:22])
    _assert_audio_error(path, "cannot decode")


def test_wav_cut_inside_its_data(tmp_path, wav):
    data = wav.read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    _assert_audio_error(path, "truncated")


def test_wav_with_header_but_no_frames(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 8000)
    _assert_audio_error(path, "no audio frames")


def test_random_bytes_named_wav(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_audio_error(path, "cannot decode")


def test_non_finite_samples(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.0, np.nan, 0.5], dtype=np.float32), 8000, subtype="FLOAT")
    _assert_audio_error(path, "non-finite")


@pytest.mark.parametrize("data, match", [(b"", "empty"), (b"RIFF\x00\x00not audio at all", "cannot decode")])
def test_decode_bytes_errors_name_the_input(data, match):
    with pytest.raises(AudioError, match=match) as info:
        audio.decode_bytes(data, name="upload.wav")
    assert str(info.value).startswith("upload.wav: ")


def test_odd_rate_is_refused_before_building_a_huge_kernel(tmp_path):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(4410, dtype=np.float32), 44101)
    with pytest.raises(AudioError, match=r"odd\.wav: sample rate unsupported \(44101 Hz cannot be resampled to 16000"):
        audio.load(path, sample_rate=16000)
    with pytest.raises(ValueError, match="cannot resample"):
        audio.resample(np.zeros(10, dtype=np.float32), 44101, 16000)
    assert audio.load(path, sample_rate=44101)[1] == 44101  # no resampling needed, so it loads


def test_a_prime_rate_is_an_unsupported_rate_not_unreadable(tmp_path):
    path = tmp_path / "prime.wav"
    sf.write(path, np.zeros(7919, dtype=np.float32), 7919)
    with pytest.raises(AudioError, match=r"prime\.wav: sample rate unsupported \(7919 Hz") as info:
        audio.load(path, sample_rate=16000)
    assert "cannot decode" not in info.value.reason and "unreadable" not in info.value.reason


def test_an_absurd_rate_is_refused_before_any_resampling():
    """16000 * 2**20 Hz passes the kernel-size check (the gcd is 16000) but would cost seconds."""
    with pytest.raises(ValueError, match="16777216000 Hz is above the 768000 Hz tympan takes"):
        audio.resample(np.zeros(800, dtype=np.float32), 16000 * 2**20, 16000)
    audio.check_rates(768_000, 16000)  # the highest rate taken
