"""Audio decoding (soundfile) and resampling (soxr) for the pipeline and training: values and errors."""

import io
import wave

import numpy as np
import pytest
import soundfile

from hlp_audio.audio_loading import (
    AudioLoadingError,
    load_audio,
    prepare_waveform,
    read_audio,
    resample_audio,
    to_mono,
)


@pytest.fixture(scope="module")
def speech_wav(shared_data):
    """A real 10 s, 32 kHz, mono, 16-bit recording."""
    return shared_data / "models" / "efficientat_mn04_as" / "sample_audio" / "speech.wav"


def _read_with_wave_module(path):
    """Independent PCM decoder: the standard library's ``wave``, int16 -> [-1, 1)."""
    with wave.open(str(path), "rb") as handle:
        assert handle.getsampwidth() == 2
        frames = handle.readframes(handle.getnframes())
        rate, channels = handle.getframerate(), handle.getnchannels()
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
    return samples.astype(np.float32) / 32768.0, rate


def test_wav_matches_the_standard_library_decoder(speech_wav):
    reference, rate = _read_with_wave_module(speech_wav)
    assert rate == 32000 and reference.shape == (320000, 1)
    waveform = load_audio(speech_wav, 32000)
    assert waveform.dtype == np.float32 and waveform.shape == (320000,)
    np.testing.assert_array_equal(waveform, reference[:, 0])
    # str, pathlib.Path, bytes and a file object decode the same
    np.testing.assert_array_equal(load_audio(str(speech_wav), 32000), waveform)
    np.testing.assert_array_equal(load_audio(speech_wav.read_bytes(), 32000), waveform)
    with open(speech_wav, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle, 32000), waveform)


def test_flac_is_lossless_and_ogg_close(speech_wav, tmp_path):
    waveform = load_audio(speech_wav, 32000)
    flac, ogg = tmp_path / "speech.flac", tmp_path / "speech.ogg"
    soundfile.write(flac, waveform, 32000, subtype="PCM_16")
    soundfile.write(ogg, waveform, 32000, format="OGG", subtype="VORBIS")
    np.testing.assert_array_equal(load_audio(flac, 32000), waveform)
    decoded = load_audio(ogg, 32000)
    assert decoded.shape == waveform.shape
    assert np.corrcoef(decoded, waveform)[0, 1] > 0.99


def test_resampling_matches_a_polyphase_reference(speech_wav):
    scipy_signal = pytest.importorskip("scipy.signal")
    waveform = load_audio(speech_wav, 32000)
    resampled = load_audio(speech_wav, 16000)
    assert resampled.shape == (160000,)
    reference = scipy_signal.resample_poly(waveform.astype(np.float64), 1, 2)
    interior = slice(1000, -1000)  # the filters' edge handling differs
    error = resampled[interior] - reference[interior]
    # the two anti-aliasing filters differ only near 8 kHz: ~1 % relative RMS on speech
    assert np.sqrt(np.mean(error**2)) < 0.02 * np.sqrt(np.mean(reference[interior] ** 2))
    # a pure tone keeps its frequency and amplitude
    t = np.arange(44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = resample_audio(tone, 44100, 16000)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out[1000:15000] * np.hanning(14000)))
    assert np.argmax(spectrum) * 16000 / 14000 == pytest.approx(1000, abs=2)
    assert np.abs(out[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_channels_policy(tmp_path):
    left = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    right = np.full(800, 0.25, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-7)
    np.testing.assert_array_equal(load_audio(path, 16000, mono="first"), left)
    with pytest.raises(AudioLoadingError, match=r"stereo\.wav has 2 channels"):
        load_audio(path, 16000, mono="error")
    with pytest.raises(ValueError, match="mono must be one of"):
        to_mono(np.zeros((10, 2), np.float32), mono="left")


def test_array_helpers_reject_bad_shapes_and_rates():
    with pytest.raises(AudioLoadingError, match=r"clip: expected \(frames, channels\) audio, got shape \(2, 3, 4\)"):
        to_mono(np.zeros((2, 3, 4), np.float32), name="clip")
    with pytest.raises(ValueError, match="sampling rates must be positive, got 0 -> 16000"):
        resample_audio(np.zeros(10, np.float32), 0, 16000)
    same = np.zeros(10, np.float32)
    assert resample_audio(same, 16000, 16000) is same


def test_missing_empty_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.wav"):
        load_audio(tmp_path / "nothing.wav", 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioLoadingError, match=r"empty\.wav is empty \(0 bytes\)"):
        load_audio(empty, 16000)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioLoadingError, match=r"cannot decode .*notes\.wav"):
        load_audio(text, 16000)
    no_frames = tmp_path / "no_frames.wav"
    soundfile.write(no_frames, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioLoadingError, match=r"no_frames\.wav contains no audio samples"):
        load_audio(no_frames, 16000)
    with pytest.raises(AudioLoadingError, match="is a folder"):
        load_audio(tmp_path, 16000)
    with pytest.raises(AudioLoadingError, match="bytes are empty"):
        load_audio(b"", 16000)
    with pytest.raises(AudioLoadingError, match="cannot decode <17 bytes of audio>"):
        load_audio(b"garbage, no audio", 16000)


def test_rate_and_length_checks(tmp_path):
    path = tmp_path / "short_44k.wav"
    soundfile.write(path, np.zeros(441, np.float32), 44100)
    with pytest.raises(AudioLoadingError, match=r"short_44k\.wav is sampled at 44100 Hz but 16000 Hz is required"):
        load_audio(path, 16000, resample=False)
    assert load_audio(path, 16000).shape == (160,)
    with pytest.raises(AudioLoadingError, match=r"short_44k\.wav is too short: 160 samples at 16000 Hz \(10\.0 ms\), at least 400"):
        load_audio(path, 16000, min_samples=400)


def test_read_audio_keeps_channels_and_rate(tmp_path):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 3)).astype(np.float32)
    path = tmp_path / "three.flac"
    soundfile.write(path, data, 22050, subtype="PCM_24")
    waveform, rate = read_audio(path)
    assert rate == 22050 and waveform.shape == (1000, 3)
    np.testing.assert_allclose(waveform, data, atol=2.0**-23)


def test_prepare_waveform():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 8000)
    out = prepare_waveform(x, 16000, 16000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert prepare_waveform(x, 8000, 16000).shape == (16000,)
    with pytest.raises(AudioLoadingError, match=r"shape \(2, 8000\); a mono 1-D waveform is required"):
        prepare_waveform(np.stack([x, x]), 16000, 16000)
    with pytest.raises(AudioLoadingError, match="dtype int16; expected float samples"):
        prepare_waveform((x * 1000).astype(np.int16), 16000, 16000)
    with pytest.raises(AudioLoadingError, match="is empty"):
        prepare_waveform(np.zeros(0, np.float32), 16000, 16000)
    bad = x.copy()
    bad[123] = np.nan
    with pytest.raises(AudioLoadingError, match="NaN or infinite samples \\(first at index 123\\)"):
        prepare_waveform(bad, 16000, 16000)
    with pytest.raises(AudioLoadingError, match="sampled at 8000 Hz but 16000 Hz is required"):
        prepare_waveform(x, 8000, 16000, resample=False, name="clip")
    with pytest.raises(AudioLoadingError, match="too short: 100 samples"):
        prepare_waveform(x[:100], 16000, 16000, min_samples=400)


def test_in_memory_wav_bytes_roundtrip():
    x = np.random.default_rng(2).uniform(-0.9, 0.9, 4000).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, x, 16000, format="WAV", subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(buffer.getvalue(), 16000), x)


def test_plain_pcm16_wav_bytes_are_read_exactly_as_soundfile_reads_them(speech_wav, tmp_path):
    """16-bit PCM WAV bytes skip the decoder (prepared data); the values are soundfile's, bit for bit."""
    from hlp_audio.audio_loading import pcm16_wav, read_audio

    real = speech_wav.read_bytes()  # a real 32 kHz 16-bit mono recording
    fast = pcm16_wav(real)
    assert fast is not None
    expected, rate = soundfile.read(io.BytesIO(real), dtype="float32", always_2d=True)
    assert fast[1] == rate == 32000 and fast[0].dtype == np.float32
    np.testing.assert_array_equal(fast[0], expected)
    stereo = np.stack([expected[:, 0], -expected[::-1, 0]], axis=1)
    for subtype, plain in [("PCM_16", True), ("PCM_24", False), ("FLOAT", False)]:
        buffer = io.BytesIO()
        soundfile.write(buffer, stereo, 32000, format="WAV", subtype=subtype)
        assert (pcm16_wav(buffer.getvalue()) is not None) == plain
        np.testing.assert_array_equal(read_audio(buffer.getvalue())[0], soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32", always_2d=True)[0])
    assert pcm16_wav(real[:1000]) is None  # a cut data chunk is left to soundfile
    assert pcm16_wav(b"RIFF" + b"\0" * 60) is None
