"""HLPAudioFeatureExtractor / MelFrontEnd against an independent numpy front end, on the real sample clips."""

import logging

import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank

from hlp_audio import HLPAudioFeatureExtractor
from hlp_audio.modeling.front_ends import MelFrontEnd, kaldi_mel_filter_bank

SAMPLE_NAMES = ("speech", "music", "typing")


@pytest.fixture(scope="module")
def sample_clips(shared_data):
    import soundfile as sf

    clips = {}
    for name in SAMPLE_NAMES:
        audio, rate = sf.read(shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / f"{name}.wav", dtype="float32")
        assert rate == 32000 and audio.ndim == 1
        clips[name] = audio
    return clips


@pytest.fixture(scope="module")
def extractor():
    return HLPAudioFeatureExtractor()


def numpy_log_mel(audio, *, n_fft=1024, win_length=800, hop=320, n_mels=128, f_min=0.0, f_max=15000.0, rate=32000):
    """Independent float64 reference: explicit framing, numpy rfft, transformers' Kaldi mel filters."""
    audio = np.asarray(audio, dtype=np.float64)
    emphasised = audio[1:] - 0.97 * audio[:-1]
    padded = np.pad(emphasised, n_fft // 2, mode="reflect")
    num_frames = 1 + (padded.size - n_fft) // hop
    frames = padded[np.arange(n_fft)[None, :] + hop * np.arange(num_frames)[:, None]]
    window = np.zeros(n_fft)
    offset = (n_fft - win_length) // 2
    window[offset : offset + win_length] = np.hanning(win_length)  # symmetric Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=rate,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )
    mel = filters.T @ power.T
    return (np.log(mel + 1e-5) + 4.5) / 5.0


# -- mel filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_mels,f_min,f_max", [(128, 0.0, 15000.0), (64, 50.0, 16000.0), (40, 20.0, 7600.0)])
def test_kaldi_mel_filters_match_transformers_kaldi_bank(n_mels, f_min, f_max):
    ours = kaldi_mel_filter_bank(n_mels, 1024, 32000, f_min, f_max, dtype=torch.float64).numpy()
    reference = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=32000,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    ).T
    assert ours.shape == (n_mels, 513)
    np.testing.assert_allclose(ours, reference, atol=1e-12)
    assert np.all(ours[:, -1] == 0.0)  # Kaldi never weighs the Nyquist bin


def test_kaldi_mel_filters_negative_f_max_is_relative_to_nyquist():
    relative = kaldi_mel_filter_bank(128, 1024, 32000, 0.0, -1000.0)
    absolute = kaldi_mel_filter_bank(128, 1024, 32000, 0.0, 15000.0)
    assert torch.equal(relative, absolute)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_mel_bins=0), "num_mel_bins"),
        (dict(n_fft=1023), "even"),
        (dict(f_min=16000.0, f_max=8000.0), "f_min < f_max"),
        (dict(f_max=20000.0), "nyquist"),
    ],
)
def test_kaldi_mel_filters_reject_bad_parameters(kwargs, match):
    args = dict(num_mel_bins=128, n_fft=1024, sampling_rate=32000, f_min=0.0, f_max=15000.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kaldi_mel_filter_bank(**args)


# -- the front end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_front_end_matches_numpy_reference_on_real_clips(extractor, sample_clips, name):
    audio = sample_clips[name]
    features = extractor(audio, sampling_rate=32000, return_tensors="np")["input_values"]
    assert features.shape == (1, 128, 1000) and features.dtype == np.float32
    reference = numpy_log_mel(audio)
    assert reference.shape == (128, 1000)
    np.testing.assert_allclose(features[0], reference, atol=2e-4, rtol=0)


@pytest.mark.parametrize("num_samples", [1026, 1345, 32000, 32001, 320000])
def test_frame_count(num_samples):
    front_end = MelFrontEnd()
    waveform = torch.randn(num_samples, generator=torch.Generator().manual_seed(num_samples)) * 0.1
    features = front_end(waveform)
    assert features.shape == (1, 128, front_end.num_frames(num_samples))
    assert front_end.num_frames(num_samples) == 1 + (num_samples - 1) // 320


def test_front_end_rejects_too_short_and_wrong_rank():
    front_end = MelFrontEnd()
    with pytest.raises(ValueError, match="at least 514"):
        front_end(torch.zeros(2, 513))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        front_end(torch.zeros(1, 2, 32000))


def test_front_end_is_float32_under_autocast(sample_clips):
    front_end = MelFrontEnd()
    waveform = torch.from_numpy(sample_clips["music"][:64000]).unsqueeze(0)
    expected = front_end(waveform)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = front_end(waveform)  # the mel matmul would run in bfloat16 if autocast reached it
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_front_end_buffers_follow_the_module(extractor):
    front_end = extractor.build_front_end().to(torch.float64)
    assert front_end.window.dtype == torch.float64  # buffers move with .to(); forward still runs in float32
    assert front_end(torch.zeros(4, 3200)).dtype == torch.float32
    assert not front_end.state_dict()  # nothing persistent: rebuilt from the parameters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_front_end_on_cuda_matches_cpu(sample_clips):  # pragma: no cover - no GPU in CI
    batch = torch.from_numpy(np.stack([sample_clips[name] for name in SAMPLE_NAMES]))
    cpu = MelFrontEnd()(batch)
    gpu = MelFrontEnd().cuda()(batch.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# -- the extractor: batching, padding, truncation ---------------------------------------------------------


def test_batch_equals_one_by_one(extractor, sample_clips):
    clips = [sample_clips[name] for name in SAMPLE_NAMES]
    batched = extractor(clips, sampling_rate=32000, return_tensors="pt")["input_values"]
    as_2d_array = extractor(np.stack(clips), sampling_rate=32000, return_tensors="pt")["input_values"]
    single = torch.cat([extractor(clip, sampling_rate=32000, return_tensors="pt")["input_values"] for clip in clips])
    assert batched.shape == (3, 128, 1000)
    torch.testing.assert_close(batched, single)
    torch.testing.assert_close(as_2d_array, single)


def test_input_types_give_the_same_features(extractor, sample_clips):
    audio = sample_clips["speech"][:32000]
    from_numpy = extractor(audio, sampling_rate=32000, return_tensors="pt")["input_values"]
    from_float64 = extractor(audio.astype(np.float64), sampling_rate=32000, return_tensors="pt")["input_values"]
    from_tensor = extractor(torch.from_numpy(audio), sampling_rate=32000, return_tensors="pt")["input_values"]
    from_list = extractor(audio.tolist(), sampling_rate=32000, return_tensors="pt")["input_values"]
    for other in (from_float64, from_tensor, from_list):
        torch.testing.assert_close(other, from_numpy)


def test_padding_to_longest_zero_pads_at_the_end(extractor, sample_clips):
    long_clip, short_clip = sample_clips["speech"], sample_clips["typing"][:48000]
    with pytest.raises(ValueError, match=r"clips of different lengths \(\[320000, 48000\] samples\).*padding=True"):
        extractor([long_clip, short_clip], sampling_rate=32000, return_tensors="pt")  # padding is never implicit
    features = extractor([long_clip, short_clip], sampling_rate=32000, padding=True, return_tensors="pt")["input_values"]
    assert features.shape == (2, 128, 1000)
    padded = np.concatenate([short_clip, np.zeros(long_clip.size - short_clip.size, dtype=np.float32)])
    expected = extractor(padded, sampling_rate=32000, return_tensors="pt")["input_values"][0]
    torch.testing.assert_close(features[1], expected)


def test_max_length_padding_and_truncation(extractor, sample_clips):
    audio = sample_clips["music"]
    truncated = extractor(audio, sampling_rate=32000, max_length=32000, truncation=True, return_tensors="pt")
    expected = extractor(audio[:32000], sampling_rate=32000, return_tensors="pt")["input_values"]
    torch.testing.assert_close(truncated["input_values"], expected)
    padded = extractor(audio[:16000], sampling_rate=32000, padding="max_length", max_length=32000, return_tensors="np")
    assert padded["input_values"].shape == (1, 128, 100)
    # padding never cuts: a clip longer than max_length keeps its length unless truncation is asked for
    longer = extractor(audio[:64000], sampling_rate=32000, padding="max_length", max_length=32000, return_tensors="np")
    assert longer["input_values"].shape == (1, 128, 200)
    np.testing.assert_allclose(longer["input_values"], extractor(audio[:64000], sampling_rate=32000, return_tensors="np")["input_values"])


def test_no_padding_returns_one_array_per_clip(extractor, sample_clips):
    clips = [sample_clips["speech"][:32000], sample_clips["music"][:64000]]
    features = extractor(clips, sampling_rate=32000, padding=False)["input_values"]
    assert [f.shape for f in features] == [(128, 100), (128, 200)]
    np.testing.assert_allclose(features[1], extractor(clips[1], sampling_rate=32000)["input_values"][0])
    with pytest.raises(ValueError, match=r"clips of different lengths \(\[32000, 64000\] samples\)"):
        extractor(clips, sampling_rate=32000, padding=False, return_tensors="pt")


def test_explicit_cpu_device(extractor, sample_clips):
    audio = sample_clips["typing"][:32000]
    on_cpu = extractor(audio, sampling_rate=32000, return_tensors="pt", device="cpu")["input_values"]
    torch.testing.assert_close(on_cpu, extractor(audio, sampling_rate=32000, return_tensors="pt")["input_values"])


# -- awkward audio ------------------------------------------------------------------------------------


def test_silence_gives_finite_constant_features(extractor):
    features = extractor(np.zeros(320000, dtype=np.float32), sampling_rate=32000, return_tensors="pt")["input_values"]
    assert torch.isfinite(features).all()
    floor = (np.log(1e-5) + 4.5) / 5
    torch.testing.assert_close(features, torch.full_like(features, floor))


@pytest.mark.parametrize("num_samples", [1, 100, 1023])
def test_too_short_clips_are_zero_padded_to_n_fft(extractor, sample_clips, num_samples):
    audio = sample_clips["speech"][16000 : 16000 + num_samples]
    features = extractor(audio, sampling_rate=32000, return_tensors="pt")["input_values"]
    assert features.shape == (1, 128, 1 + 1023 // 320)
    padded = np.concatenate([audio, np.zeros(1024 - num_samples, dtype=np.float32)])
    np.testing.assert_allclose(features[0].numpy(), numpy_log_mel(padded), atol=2e-4, rtol=0)


def test_wrong_sampling_rate_is_an_error(extractor, sample_clips):
    with pytest.raises(ValueError, match="16000 Hz.*expects 32000 Hz.*resample"):
        extractor(sample_clips["speech"], sampling_rate=16000)
    with pytest.raises(ValueError, match="32000.9 Hz.*expects 32000 Hz"):  # not silently truncated to 32000
        extractor(sample_clips["speech"], sampling_rate=32000.9)


def test_missing_sampling_rate_warns(extractor, sample_clips, caplog):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            extractor(sample_clips["speech"][:32000])
    finally:
        hf_logging.disable_propagation()
    assert "No sampling_rate passed" in caplog.text


@pytest.mark.parametrize(
    "make_input,match",
    [
        (lambda a: np.stack([a, a], axis=1), r"\(320000, 2\) looks like \(samples, channels\)"),
        (lambda a: [a, np.stack([a, a])], r"clip 1 has shape \(2, 320000\); only mono"),
        (lambda a: a.reshape(1, 1, -1), r"shape \(1, 1, 320000\).*downmixed"),
        (lambda a: a[:0], "the clip is empty"),
        (lambda a: [a, a[:0]], "clip 1 is empty"),
        (lambda a: [], "empty batch"),
        (lambda a: [a, np.where(np.arange(a.size) == 5, np.nan, a)], "clip 1 contains NaN"),
        (lambda a: (a * 32767).astype(np.int16), r"integer samples \(int16\)"),
        (lambda a: torch.zeros(32000, dtype=torch.int32), r"integer samples \(torch.int32\)"),
    ],
)
def test_bad_audio_is_a_clear_error(extractor, sample_clips, make_input, match):
    with pytest.raises(ValueError, match=match):
        extractor(make_input(sample_clips["speech"]), sampling_rate=32000)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(padding="max_length"), "need max_length"),
        (dict(truncation=True), "need max_length"),
        (dict(padding="max_length", max_length=100), "shorter than the minimum of 1024"),
        (dict(padding="bucket"), "padding must be"),
        (dict(return_tensors="tf"), "return_tensors must be"),
    ],
)
def test_bad_arguments_are_clear_errors(extractor, sample_clips, kwargs, match):
    with pytest.raises(ValueError, match=match):
        extractor(sample_clips["speech"], sampling_rate=32000, **kwargs)


def test_non_audio_input_is_a_type_error(extractor):
    with pytest.raises(TypeError, match="numpy array, a torch tensor"):
        extractor("speech.wav", sampling_rate=32000)


# -- serialisation ------------------------------------------------------------------------------------


def test_save_and_reload_round_trip(tmp_path, sample_clips):
    extractor = HLPAudioFeatureExtractor(f_max=14000.0, num_mel_bins=64)
    extractor.save_pretrained(tmp_path)
    saved = (tmp_path / "preprocessor_config.json").read_text()
    assert '"f_max": 14000.0' in saved and "_front_ends" not in saved
    reloaded = HLPAudioFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.num_mel_bins == 64 and reloaded.f_max == 14000.0
    audio = sample_clips["music"][:32000]
    torch.testing.assert_close(
        reloaded(audio, sampling_rate=32000, return_tensors="pt")["input_values"],
        extractor(audio, sampling_rate=32000, return_tensors="pt")["input_values"],
    )
    np.testing.assert_allclose(
        reloaded(audio, sampling_rate=32000, return_tensors="np")["input_values"][0],
        numpy_log_mel(audio, n_mels=64, f_max=14000.0),
        atol=2e-4,
        rtol=0,
    )
