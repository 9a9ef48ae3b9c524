"""UCI-HAR-style signal processing and window features, as pure numpy/scipy functions.

Why here and not in the loader: the maths is the part worth testing on synthetic signals with known answers
(a sine's dominant bin, the energy of a constant, the angle of orthogonal vectors), independent of any file.

Conventions. Whole-recording signals are ``(T, 3)`` (triaxial) or ``(T,)`` arrays; window statistics take
``(..., n)`` arrays and reduce the last axis, so a batch of windows is one call with no Python loop per
window. Every statistic is finite for every finite input: constant windows give 0 for the scale-free
statistics (skewness, kurtosis, correlation, AR coefficients, entropies) instead of 0/0.

Entropy: time-domain signals use the Shannon entropy (bits) of the window's normalised 10-bin histogram
(bins spanning the window's own min..max); frequency-domain signals use the spectral entropy (bits) of the
normalised power spectrum.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sp_signal

__all__ = [
    "FS_HZ",
    "WINDOW",
    "N_FFT_BINS",
    "BANDS",
    "median3",
    "butter_lowpass",
    "jerk",
    "magnitude",
    "time_signals",
    "mean",
    "std",
    "mad",
    "maximum",
    "minimum",
    "energy",
    "iqr",
    "hist_entropy",
    "skewness",
    "kurtosis",
    "sma",
    "correlation",
    "ar_coefficients",
    "amplitude_spectrum",
    "max_index",
    "mean_freq",
    "band_energies",
    "spectral_entropy",
    "angle",
    "window_features",
]

FS_HZ = 50.0
"""Sampling rate of the HAPT/UCI HAR smartphone recordings."""
WINDOW = 128
"""2.56 s windows at 50 Hz, as UCI HAR."""
N_FFT_BINS = 64
"""Spectrum bins kept per window: DC up to just below Nyquist (UCI's 64 ``bandsEnergy`` bins)."""
BANDS: tuple[tuple[int, int], ...] = (
    *((i, i + 8) for i in range(0, 64, 8)),
    *((i, i + 16) for i in range(0, 64, 16)),
    (0, 24),
    (24, 48),
)
"""UCI's 14 energy bands as half-open 0-based bin ranges (named 1-based inclusive, e.g. ``1,8``)."""

_AXES = ("X", "Y", "Z")
_TINY = 1e-30


# ---------------------------------------------------------------- whole-recording signal processing


def median3(x: np.ndarray) -> np.ndarray:
    """Median filter of order 3 along axis 0 (edges replicate), UCI's first de-noising step."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        return x.copy()
    prev = np.concatenate([x[:1], x[:-1]], axis=0)
    nxt = np.concatenate([x[1:], x[-1:]], axis=0)
    return np.median(np.stack([prev, x, nxt]), axis=0)


def butter_lowpass(x: np.ndarray, cutoff_hz: float, fs: float = FS_HZ, order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth low-pass along axis 0 (forward-backward, so features are not delayed)."""
    sos = sp_signal.butter(order, cutoff_hz, btype="low", fs=fs, output="sos")
    return sp_signal.sosfiltfilt(sos, np.asarray(x, dtype=np.float64), axis=0)


def jerk(x: np.ndarray, fs: float = FS_HZ) -> np.ndarray:
    """Time derivative along axis 0 in units per second (central differences times the sampling rate)."""
    return np.gradient(np.asarray(x, dtype=np.float64), axis=0) * fs


def magnitude(x: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last (axis) dimension of a triaxial signal."""
    return np.sqrt(np.sum(np.square(x), axis=-1))


def time_signals(acc: np.ndarray, gyro: np.ndarray, fs: float = FS_HZ) -> dict[str, np.ndarray]:
    """UCI's time-domain signals of one whole recording, filtered before windowing so filters see context.

    ``acc`` (g) and ``gyro`` (rad/s) are ``(T, 3)``. Noise: median-3 then 20 Hz low-pass; gravity is the
    0.3 Hz low-pass of the de-noised acceleration and body acceleration the rest.
    """
    acc_f = butter_lowpass(median3(acc), 20.0, fs)
    gyro_f = butter_lowpass(median3(gyro), 20.0, fs)
    gravity = butter_lowpass(acc_f, 0.3, fs)
    body = acc_f - gravity
    body_jerk = jerk(body, fs)
    gyro_jerk = jerk(gyro_f, fs)
    return {
        "tBodyAcc": body,
        "tGravityAcc": gravity,
        "tBodyAccJerk": body_jerk,
        "tBodyGyro": gyro_f,
        "tBodyGyroJerk": gyro_jerk,
        "tBodyAccMag": magnitude(body),
        "tGravityAccMag": magnitude(gravity),
        "tBodyAccJerkMag": magnitude(body_jerk),
        "tBodyGyroMag": magnitude(gyro_f),
        "tBodyGyroJerkMag": magnitude(gyro_jerk),
    }


# ---------------------------------------------------------------- window statistics (reduce last axis)


def mean(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=-1)


def std(x: np.ndarray) -> np.ndarray:
    """Population standard deviation (ddof=0)."""
    return np.std(x, axis=-1)


def mad(x: np.ndarray) -> np.ndarray:
    """Median absolute deviation from the median (unscaled)."""
    med = np.median(x, axis=-1, keepdims=True)
    return np.median(np.abs(x - med), axis=-1)


def maximum(x: np.ndarray) -> np.ndarray:
    return np.max(x, axis=-1)


def minimum(x: np.ndarray) -> np.ndarray:
    return np.min(x, axis=-1)


def energy(x: np.ndarray) -> np.ndarray:
    """Mean of squares (so it does not grow with the window length)."""
    return np.mean(np.square(x), axis=-1)


def iqr(x: np.ndarray) -> np.ndarray:
    """Interquartile range (75th minus 25th percentile, linear interpolation)."""
    q75, q25 = np.quantile(x, [0.75, 0.25], axis=-1)
    return q75 - q25


def _safe_entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of distributions along the last axis (0 log 0 = 0)."""
    safe = np.where(p > 0, p, 1.0)
    return -np.sum(np.where(p > 0, p * np.log2(safe), 0.0), axis=-1)


def hist_entropy(x: np.ndarray, bins: int = 10) -> np.ndarray:
    """Entropy (bits) of the normalised ``bins``-bin histogram spanning each window's own range.

    A constant window puts everything in one bin: entropy 0.
    """
    x = np.asarray(x, dtype=np.float64)
    lo = np.min(x, axis=-1, keepdims=True)
    span = np.max(x, axis=-1, keepdims=True) - lo
    scale = np.where(span > 0, bins / np.where(span > 0, span, 1.0), 0.0)
    idx = np.clip(np.floor((x - lo) * scale).astype(np.int64), 0, bins - 1)
    counts = np.sum(idx[..., None] == np.arange(bins), axis=-2)
    return _safe_entropy_bits(counts / x.shape[-1])


def _central_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (m2, m3, m4, is_flat); ``is_flat`` marks windows whose spread is numerically zero."""
    x = np.asarray(x, dtype=np.float64)
    d = x - np.mean(x, axis=-1, keepdims=True)
    d2 = d * d
    m2 = np.mean(d2, axis=-1)
    m3 = np.mean(d2 * d, axis=-1)
    m4 = np.mean(d2 * d2, axis=-1)
    flat = m2 <= 1e-12 * np.mean(x * x, axis=-1) + _TINY
    return m2, m3, m4, flat


def skewness(x: np.ndarray) -> np.ndarray:
    """Sample skewness m3 / m2^1.5; 0 for a constant window."""
    m2, m3, _, flat = _central_moments(x)
    return np.where(flat, 0.0, m3 / np.where(flat, 1.0, m2) ** 1.5)


def kurtosis(x: np.ndarray) -> np.ndarray:
    """Excess kurtosis m4 / m2^2 - 3; 0 for a constant window."""
    m2, _, m4, flat = _central_moments(x)
    return np.where(flat, 0.0, m4 / np.where(flat, 1.0, m2) ** 2 - 3.0)


def sma(*axes: np.ndarray) -> np.ndarray:
    """Signal magnitude area: mean over the window of the summed absolute values of the given axes."""
    return np.mean(np.sum([np.abs(a) for a in axes], axis=0), axis=-1)


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of two signals per window; 0 when either is constant."""
    da = a - np.mean(a, axis=-1, keepdims=True)
    db = b - np.mean(b, axis=-1, keepdims=True)
    va, vb = np.mean(da * da, axis=-1), np.mean(db * db, axis=-1)
    flat_a = va <= 1e-12 * np.mean(a * a, axis=-1) + _TINY
    flat_b = vb <= 1e-12 * np.mean(b * b, axis=-1) + _TINY
    ok = ~(flat_a | flat_b)
    denom = np.sqrt(np.where(ok, va * vb, 1.0))
    return np.where(ok, np.clip(np.mean(da * db, axis=-1) / denom, -1.0, 1.0), 0.0)


def ar_coefficients(x: np.ndarray, order: int = 4) -> np.ndarray:
    """Yule-Walker AR(``order``) coefficients per window, shape ``(..., order)``.

    Convention ``x_t = sum_k a_k x_{t-k} + e_t``. The biased autocorrelation keeps the Toeplitz system
    positive semi-definite; a tiny diagonal loading makes constant windows solve to all zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    d = x - np.mean(x, axis=-1, keepdims=True)
    r = np.stack([np.sum(d[..., : n - k] * d[..., k:], axis=-1) / n for k in range(order + 1)], axis=-1)
    lag = np.abs(np.subtract.outer(np.arange(order), np.arange(order)))
    mat = r[..., lag] + (r[..., :1, None] * 1e-9 + _TINY) * np.eye(order)
    return np.linalg.solve(mat, r[..., 1:, None])[..., 0]


# ---------------------------------------------------------------- frequency domain


def amplitude_spectrum(x: np.ndarray, n_bins: int = N_FFT_BINS) -> np.ndarray:
    """|FFT| / n of each window, first ``n_bins`` bins (bin k is k * fs / n Hz)."""
    n = x.shape[-1]
    return np.abs(np.fft.rfft(x, axis=-1))[..., :n_bins] / n


def max_index(spec: np.ndarray) -> np.ndarray:
    """0-based index of the largest spectrum bin (UCI ``maxInds``), as float."""
    return np.argmax(spec, axis=-1).astype(np.float64)


def mean_freq(spec: np.ndarray, fs: float = FS_HZ, n: int = WINDOW) -> np.ndarray:
    """Amplitude-weighted mean frequency in Hz; 0 for an all-zero spectrum."""
    freqs = np.arange(spec.shape[-1]) * fs / n
    total = np.sum(spec, axis=-1)
    ok = total > _TINY
    return np.where(ok, np.sum(spec * freqs, axis=-1) / np.where(ok, total, 1.0), 0.0)


def band_energies(spec: np.ndarray, bands: tuple[tuple[int, int], ...] = BANDS) -> np.ndarray:
    """Sum of squared amplitudes within each half-open bin range, shape ``(..., len(bands))``."""
    power = np.square(spec)
    return np.stack([np.sum(power[..., lo:hi], axis=-1) for lo, hi in bands], axis=-1)


def spectral_entropy(spec: np.ndarray) -> np.ndarray:
    """Entropy (bits) of the normalised power spectrum; 0 for an all-zero spectrum."""
    power = np.square(spec)
    total = np.sum(power, axis=-1, keepdims=True)
    return _safe_entropy_bits(np.where(total > _TINY, power / np.where(total > _TINY, total, 1.0), 0.0))


def angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in radians between vectors on the last axis; pi/2 when either vector is (near) zero."""
    na = np.sqrt(np.sum(np.square(a), axis=-1))
    nb = np.sqrt(np.sum(np.square(b), axis=-1))
    denom = na * nb
    ok = denom > 1e-12
    cos = np.where(ok, np.sum(a * b, axis=-1) / np.where(ok, denom, 1.0), 0.0)
    return np.arccos(np.clip(cos, -1.0, 1.0))


# ---------------------------------------------------------------- assembling the feature vector


_TIME_STATS = (
    ("mean", mean),
    ("std", std),
    ("mad", mad),
    ("max", maximum),
    ("min", minimum),
    ("energy", energy),
    ("iqr", iqr),
    ("entropy", hist_entropy),
    ("skewness", skewness),
    ("kurtosis", kurtosis),
)
_FREQ_STATS = (*_TIME_STATS[:7], ("entropy", spectral_entropy), *_TIME_STATS[8:])

_TRIAXIAL_TIME = ("tBodyAcc", "tGravityAcc", "tBodyAccJerk", "tBodyGyro", "tBodyGyroJerk")
_MAG_TIME = ("tBodyAccMag", "tGravityAccMag", "tBodyAccJerkMag", "tBodyGyroMag", "tBodyGyroJerkMag")
_TRIAXIAL_FREQ = ("tBodyAcc", "tBodyAccJerk", "tBodyGyro")
_MAG_FREQ = ("tBodyAccMag", "tBodyAccJerkMag", "tBodyGyroMag", "tBodyGyroJerkMag")


class _Columns:
    """Collects (name, column) pairs in order."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.cols: list[np.ndarray] = []

    def add(self, name: str, col: np.ndarray) -> None:
        self.names.append(name)
        self.cols.append(col)


def _triaxial(out: _Columns, name: str, w: np.ndarray, stats: tuple, freq: bool) -> None:
    """Features of a ``(W, 3, n)`` window batch (time signal, or spectrum when ``freq``)."""
    for stat, fn in stats:
        vals = fn(w)
        for j, ax in enumerate(_AXES):
            out.add(f"{name}-{stat}()-{ax}", vals[:, j])
    out.add(f"{name}-sma()", sma(w[:, 0], w[:, 1], w[:, 2]))
    if freq:
        for stat, fn in (("maxInds", max_index), ("meanFreq", mean_freq)):
            vals = fn(w)
            for j, ax in enumerate(_AXES):
                out.add(f"{name}-{stat}()-{ax}", vals[:, j])
        bands = band_energies(w)
        for j, ax in enumerate(_AXES):
            for b, (lo, hi) in enumerate(BANDS):
                out.add(f"{name}-bandsEnergy()-{lo + 1},{hi}-{ax}", bands[:, j, b])
    else:
        ar = ar_coefficients(w)
        for j, ax in enumerate(_AXES):
            for k in range(ar.shape[-1]):
                out.add(f"{name}-arCoeff()-{ax},{k + 1}", ar[:, j, k])
        for i, j in ((0, 1), (0, 2), (1, 2)):
            out.add(f"{name}-correlation()-{_AXES[i]},{_AXES[j]}", correlation(w[:, i], w[:, j]))


def _single(out: _Columns, name: str, w: np.ndarray, stats: tuple, freq: bool) -> None:
    """Features of a ``(W, n)`` window batch of a magnitude signal (or its spectrum)."""
    for stat, fn in stats:
        out.add(f"{name}-{stat}()", fn(w))
    out.add(f"{name}-sma()", sma(w))
    if freq:
        out.add(f"{name}-maxInds()", max_index(w))
        out.add(f"{name}-meanFreq()", mean_freq(w))
    else:
        ar = ar_coefficients(w)
        for k in range(ar.shape[-1]):
            out.add(f"{name}-arCoeff(){k + 1}", ar[:, k])


def _windows(x: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Gather windows ``x[s : s + size]`` as ``(W, size)`` or, for triaxial ``x``, ``(W, 3, size)``."""
    idx = starts[:, None] + np.arange(size)
    w = x[idx]
    return np.moveaxis(w, 1, -1) if w.ndim == 3 else w


def window_features(
    acc: np.ndarray, gyro: np.ndarray, starts: np.ndarray, fs: float = FS_HZ, size: int = WINDOW
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix ``(len(starts), F)`` and the F UCI-style names for windows of one recording.

    ``acc``/``gyro`` are the raw ``(T, 3)`` recording; signals are filtered over the whole recording and
    then cut at ``starts`` (each window ``[s, s + size)`` must lie inside the recording).
    """
    acc = np.asarray(acc, dtype=np.float64)
    gyro = np.asarray(gyro, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    if acc.ndim != 2 or acc.shape[1] != 3 or gyro.shape != acc.shape:
        raise ValueError(f"acc and gyro must both be (T, 3); got {acc.shape} and {gyro.shape}")
    if starts.size and (starts.min() < 0 or starts.max() + size > acc.shape[0]):
        raise ValueError(f"window starts must lie in [0, {acc.shape[0] - size}]")
    sig = time_signals(acc, gyro, fs)
    w = {name: _windows(x, starts, size) for name, x in sig.items()}
    out = _Columns()
    for name in _TRIAXIAL_TIME:
        _triaxial(out, name, w[name], _TIME_STATS, freq=False)
    for name in _MAG_TIME:
        _single(out, name, w[name], _TIME_STATS, freq=False)
    for name in _TRIAXIAL_FREQ:
        _triaxial(out, "f" + name[1:], amplitude_spectrum(w[name]), _FREQ_STATS, freq=True)
    for name in _MAG_FREQ:
        _single(out, "f" + name[1:], amplitude_spectrum(w[name]), _FREQ_STATS, freq=True)
    gravity_mean = np.mean(w["tGravityAcc"], axis=-1)
    for name in ("tBodyAcc", "tBodyAccJerk", "tBodyGyro", "tBodyGyroJerk"):
        out.add(f"angle({name}Mean,gravityMean)", angle(np.mean(w[name], axis=-1), gravity_mean))
    for j, ax in enumerate(_AXES):
        out.add(f"angle({ax},gravityMean)", angle(np.eye(3)[j], gravity_mean))
    return np.stack(out.cols, axis=1), out.names
