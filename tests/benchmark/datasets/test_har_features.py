"""The HAR signal maths on synthetic signals whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.datasets import har_features as hf

N = hf.WINDOW
FS = hf.FS_HZ


def _sine(bin_index: int, n: int = N, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(n) / FS
    return amplitude * np.sin(2 * np.pi * bin_index * FS / n * t)


def test_constant_window_statistics() -> None:
    x = np.full((2, N), 3.0)
    assert np.allclose(hf.mean(x), 3.0)
    assert np.allclose(hf.energy(x), 9.0)
    for fn in (hf.std, hf.mad, hf.iqr, hf.hist_entropy, hf.skewness, hf.kurtosis):
        assert np.array_equal(fn(x), np.zeros(2)), fn.__name__
    assert np.array_equal(hf.ar_coefficients(x), np.zeros((2, 4)))
    assert np.array_equal(hf.correlation(x, np.arange(2 * N, dtype=float).reshape(2, N)), np.zeros(2))
    assert np.allclose(hf.maximum(x), 3.0) and np.allclose(hf.minimum(x), 3.0)


def test_order_statistics() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert hf.mad(x) == pytest.approx(1.0)  # |x - 3| = 2, 1, 0, 1, 97
    assert hf.iqr(np.arange(5.0)) == pytest.approx(2.0)
    assert hf.sma(np.ones(N), np.full(N, -2.0), np.full(N, 3.0)) == pytest.approx(6.0)


def test_moments_of_a_sine() -> None:
    x = _sine(4)
    assert hf.skewness(x) == pytest.approx(0.0, abs=1e-9)
    assert hf.kurtosis(x) == pytest.approx(-1.5, abs=1e-9)  # excess kurtosis of a sinusoid
    assert hf.std(x) == pytest.approx(np.sqrt(0.5))


def test_histogram_entropy() -> None:
    ramp = np.arange(1000.0)  # nearly uniform over 10 bins
    assert hf.hist_entropy(ramp) == pytest.approx(np.log2(10), abs=1e-3)
    two_values = np.array([0.0, 1.0] * 64)
    assert hf.hist_entropy(two_values) == pytest.approx(1.0)


def test_correlation_signs() -> None:
    x = np.random.default_rng(0).normal(size=N)
    assert hf.correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert hf.correlation(x, -x) == pytest.approx(-1.0)


def test_ar_coefficients_recover_an_ar1_process() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=20000)
    x = np.zeros_like(e)
    for t in range(1, x.size):
        x[t] = 0.9 * x[t - 1] + e[t]
    a = hf.ar_coefficients(x)
    assert a[0] == pytest.approx(0.9, abs=0.03)
    assert np.all(np.abs(a[1:]) < 0.05)


def test_spectrum_of_a_sine() -> None:
    spec = hf.amplitude_spectrum(_sine(10, amplitude=2.0))
    assert spec.shape == (hf.N_FFT_BINS,)
    assert hf.max_index(spec) == 10
    assert spec[10] == pytest.approx(1.0)  # |FFT| / n of amplitude-2 sine: 2 / 2
    assert hf.mean_freq(spec) == pytest.approx(10 * FS / N)
    assert hf.spectral_entropy(spec) == pytest.approx(0.0, abs=1e-9)
    bands = hf.band_energies(spec)
    assert bands.shape == (len(hf.BANDS),)
    assert np.argmax(bands[:8]) == 1  # bin 10 lies in band 9..16
    assert bands[1] == pytest.approx(1.0)


def test_zero_spectrum_is_finite() -> None:
    spec = hf.amplitude_spectrum(np.zeros((3, N)))
    for fn in (hf.mean_freq, hf.spectral_entropy, hf.max_index):
        assert np.all(np.isfinite(fn(spec))) and np.all(fn(spec) == 0)


def test_angles() -> None:
    assert hf.angle(np.array([1.0, 0, 0]), np.array([0, 2.0, 0])) == pytest.approx(np.pi / 2)
    assert hf.angle(np.array([1.0, 1, 0]), np.array([2.0, 2, 0])) == pytest.approx(0.0, abs=1e-7)
    assert hf.angle(np.array([0, 0, 1.0]), np.array([0, 0, -3.0])) == pytest.approx(np.pi)
    assert hf.angle(np.zeros(3), np.array([0, 0, 1.0])) == pytest.approx(np.pi / 2)


def test_signal_filters() -> None:
    spike = np.array([0.0, 0, 10, 0, 0])
    assert np.array_equal(hf.median3(spike), np.zeros(5))
    t = np.arange(2000) / FS
    const = np.full((2000, 3), 0.7)
    assert np.allclose(hf.butter_lowpass(const, 0.3), 0.7)
    fast = np.sin(2 * np.pi * 5.0 * t)
    assert np.max(np.abs(hf.butter_lowpass(fast, 0.3)[500:-500])) < 1e-3
    slow = np.sin(2 * np.pi * 1.0 * t)
    assert np.allclose(hf.butter_lowpass(slow, 20.0)[100:-100], slow[100:-100], atol=1e-3)
    assert np.allclose(hf.jerk(2.0 * t), 2.0)
    assert hf.magnitude(np.array([3.0, 4.0, 0.0])) == pytest.approx(5.0)


def test_time_signals_split_gravity_from_body() -> None:
    acc = np.tile([0.0, 0.0, 1.0], (1000, 1))
    sig = hf.time_signals(acc, np.zeros((1000, 3)))
    assert np.allclose(sig["tGravityAcc"], acc)
    assert np.allclose(sig["tBodyAcc"], 0.0, atol=1e-9)
    assert np.allclose(sig["tGravityAccMag"], 1.0)


def test_window_features_shape_names_and_constant_input() -> None:
    acc = np.tile([0.0, 0.0, 1.0], (600, 1))
    x, names = hf.window_features(acc, np.zeros((600, 3)), np.array([0, 64, 400]))
    assert x.shape == (3, len(names))
    assert len(names) > 500 and len(set(names)) == len(names)
    assert np.all(np.isfinite(x))
    col = {n: i for i, n in enumerate(names)}
    assert np.allclose(x[:, col["angle(Z,gravityMean)"]], 0.0, atol=1e-6)
    assert np.allclose(x[:, col["angle(X,gravityMean)"]], np.pi / 2)
    assert np.allclose(x[:, col["tGravityAcc-mean()-Z"]], 1.0)
    assert "tBodyAcc-mean()-X" in col and "fBodyAcc-bandsEnergy()-1,8-X" in col


def test_window_features_are_per_window_and_vectorised() -> None:
    rng = np.random.default_rng(3)
    acc, gyro = rng.normal(size=(900, 3)), rng.normal(size=(900, 3))
    both, _ = hf.window_features(acc, gyro, np.array([64, 500]))
    one, _ = hf.window_features(acc, gyro, np.array([500]))
    assert np.allclose(both[1], one[0])
    empty, names = hf.window_features(acc, gyro, np.zeros(0, dtype=np.int64))
    assert empty.shape == (0, len(names))


def test_window_features_rejects_windows_outside_the_recording() -> None:
    with pytest.raises(ValueError, match="window starts"):
        hf.window_features(np.zeros((200, 3)), np.zeros((200, 3)), np.array([100]))
