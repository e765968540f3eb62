"""Bleed removal: fit the short path by which a singer's headset program leaks into their
microphone, on passages where they are quiet, and predict that bleed so it can be subtracted.

The model, per recording: ``x[n] = v[n] + noise[n] + Σ_c Σ_k h_c[k] · p_c[n + PRE − k]`` where
``p`` is the program the singer heard (1 or 2 channels, on the timeline, sample-aligned with
the placed recording), ``h_c`` a filter of ``taps`` frames starting ``PRE`` frames before lag 0
(a latency estimate a few frames off still fits).  The filter is fitted by least squares on
*hops* (short stretches, :data:`HOP_S`) where the singer is quiet: the count-in and the hops
where the recording is loud only as far as the program explains it, chosen iteratively by how
much of each hop the fit explains.  A fit that does not lower quiet hops it was not fitted
on is not used, and its prediction is kept only in the octave bands where it can be trusted
(:func:`_trusted`).  When the whole-take fit leaves the quiet hops well above the room noise, the
filter is refitted in overlapping windows along the take (regularised towards the whole-take
fit) so a path that changes slowly is followed.

Pure: arrays and a rate in, arrays out; the caller reads the recording and renders the program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft
import scipy.linalg
import scipy.signal

from .types import AudioError

__all__ = [
    "HOP_S",
    "LeakFit",
    "FitLayout",
    "layout_for",
    "hop_energies",
    "candidate_hops",
    "fit_leak",
    "plainly_kept",
    "NEVER_QUIET_REASON",
    "SILENT_REASON",
    "probe_hops",
    "probe_leak",
    "predict",
]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
#: Samples as read (float32) or as computed (float64).
Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]

#: Length of a hop, the unit of quiet-passage selection, in seconds.
HOP_S = 0.02
#: Leak filter length, in seconds (the headphone-to-microphone path is a few centimetres of air
#: plus the transducers' responses).
TAPS_S = 0.006
#: Lags before 0 the filter covers, in seconds (a latency measured a few frames off).
PRE_S = 0.0004
#: Half-width of a refit window (triangular weights), and the spacing of window centres, s.
WINDOW_S = 8.0
#: A fit is used only if it lowers the energy of quiet passages it was not fitted on by this
#: much, in dB: below that the leak is lost in the room noise (or is not there).
MIN_GAIN_DB = 1.0
#: Fewer quiet hops than this (0.6 s) and no fit is attempted.
MIN_HOPS = 30
#: Candidate hops of a first, cheap look for a leak (:func:`probe_hops`); the whole fit
#: follows only if it finds one.
PROBE_HOPS = 300
#: Most candidate hops of one recording (a take of an hour is thinned evenly: the fit's
#: memory and time stay bounded).
MAX_FIT_HOPS = 3000
#: Most candidate hops per window span (the fit's cost is bounded, whatever the take's length).
MAX_HOPS_PER_WINDOW = 25
#: Lower edges (Hz) of the bands above the first in which a fit's prediction is checked on
#: its own: a fit that removes the click can be wrong where the program only sounds while
#: the singer sings (the backing), and is then kept only in the bands where it helps.
BAND_EDGES_HZ = (150.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0)
#: A band's held-out least-squares scale at least this: its prediction is subtracted whole.
_WHOLE_BAND = 0.75
#: A band with less than this share of the held-out prediction is not measured there.
_MEASURED = 0.01
#: A band whose scale on the whole recording's sample is under this by two standard errors
#: is wrong there ...
_SAMPLE_FLOOR = 0.25
#: ... when at least this many hops' worth of its prediction were measured.
_SAMPLE_HOPS = 30
#: A fit's power gain in a band above its gain in the band that carries most of its
#: prediction by this much (18 dB) is noise fitted where the quiet hops had little program.
_MOST_ABOVE = 63.0
#: A band that a recording heard this many times as loud as its quiet hops did is trusted
#: less (:func:`_seen_enough`).
_MOST_UNSEEN = 32.0
#: Length of the filter that scales a fit's bands, s (its resolution: 1 / SHAPE_S Hz).
SHAPE_S = 0.02
#: dB by which the hops a fit was tried on must be quieter (median) than the recording where
#: the program sounds for "no leak found" to mean no leak, not a singer never quiet
NEVER_QUIET = 10.0
NEVER_QUIET_REASON = (
    "the singer was never quiet while the click or backing played, so the leak could not "
    "be measured"
)
SILENT_REASON = "the recording is silent where the click or backing played"


@dataclass(frozen=True)
class FitLayout:
    """Sizes at one rate: ``hop`` frames per hop, ``taps`` filter length, ``pre`` frames of
    filter before lag 0, ``window`` half-width of a refit window in frames."""

    rate: int
    hop: int
    taps: int
    pre: int
    window: int

    @property
    def context(self) -> tuple[int, int]:
        """Program frames needed around a range ``[lo, hi)``: ``[lo - before, hi + after)``."""
        return self.taps - 1 - self.pre, self.pre


def layout_for(rate: int) -> FitLayout:
    """The hop, filter and window sizes at ``rate`` (Hz)."""
    if rate <= 0:
        raise AudioError(f"bleed: rate must be positive, got {rate}")
    return FitLayout(
        rate,
        hop=max(16, round(HOP_S * rate)),
        taps=max(8, round(TAPS_S * rate)),
        pre=max(2, round(PRE_S * rate)),
        window=round(WINDOW_S * rate),
    )


@dataclass
class LeakFit:
    """A fitted leak path, or why there is none.

    Attributes
    ----------
    layout : FitLayout
    centres : ndarray of float, (K,)
        Timeline frames of the refit windows' centres (increasing).
    filters : ndarray of float, (K, channels, taps)
        The leak filter of each window.
    gain_db : float
        How much the fit lowered the energy of quiet hops it was not fitted on (cross-validated),
        dB; ``nan`` when not measured.
    quiet_s : float
        Seconds of quiet hops the fit used.
    reason : str
        Empty when the fit is to be used; otherwise why not (for the report).
    """

    layout: FitLayout
    centres: F64
    filters: F64
    gain_db: float = float("nan")
    quiet_s: float = 0.0
    reason: str = ""
    #: (a whole-take fit's) fits per quarter of the take explained clearly more: the path changed
    changing: bool = False
    #: each window's filter spectrum by FFT length (made once: :func:`predict` reuses them)
    _spectra: dict[int, npt.NDArray[np.complex64]] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def usable(self) -> bool:
        return not self.reason

    def spectrum_at(self, t: float, nfft: int) -> npt.NDArray[np.complex64]:
        """The spectrum (``nfft``-point rfft, (nfft // 2 + 1, channels)) of :meth:`filter_at`
        ``t``: the windows' spectra interpolated as their filters are (the FFT is linear)."""
        spectra = self._spectra.get(nfft)
        if spectra is None:
            taps = self.filters.astype(np.float32).transpose(0, 2, 1)  # (K, taps, channels)
            spectra = self._spectra[nfft] = scipy.fft.rfft(taps, n=nfft, axis=1)
        if len(self.centres) == 1:
            one: npt.NDArray[np.complex64] = spectra[0]
            return one
        k, w = _between(self.centres, np.array([float(t)]))
        lo, weight = int(k[0]), np.float32(w[0])
        out: npt.NDArray[np.complex64] = (1 - weight) * spectra[lo] + weight * spectra[lo + 1]
        return out

    def filter_at(self, t: float) -> F64:
        """The filter at timeline frame ``t`` (linear between window centres), (channels, taps)."""
        if len(self.centres) == 1:
            one: F64 = self.filters[0]
            return one
        k, w = _between(self.centres, np.array([float(t)]))
        out: F64 = (1 - w[0]) * self.filters[k[0]] + w[0] * self.filters[k[0] + 1]
        return out


def _between(centres: F64, t: F64) -> tuple[npt.NDArray[np.intp], F64]:
    """For times ``t``: the window ``k`` before each and the weight ``w`` of window ``k + 1``
    (linear interpolation; continued for half a spacing beyond the outer centres, then held)."""
    k = np.clip(np.searchsorted(centres, t) - 1, 0, len(centres) - 2)
    w = (t - centres[k]) / (centres[k + 1] - centres[k])
    return k, np.clip(w, -0.5, 1.5)


def hop_energies(x: npt.NDArray[np.floating], hop: int) -> F64:
    """Mean square per hop of ``x`` (frames,) or (frames, channels) — all channels summed —
    over whole hops; a last partial hop is averaged over what there is."""
    a = np.asarray(x)
    sq = a * a if a.ndim == 1 else np.einsum("ij,ij->i", a, a)
    n = sq.shape[0]
    full = n // hop
    out = np.empty(full + (1 if n % hop else 0))
    out[:full] = sq[: full * hop].reshape(full, hop).mean(axis=1, dtype=np.float64)
    if n % hop:
        out[full] = sq[full * hop :].mean()
    return out


def _bands_of(n: int, rate: int) -> npt.NDArray[np.intp]:
    """The :data:`BAND_EDGES_HZ` band of each bin of an ``n``-point rfft at ``rate``."""
    bands: npt.NDArray[np.intp] = np.searchsorted(
        BAND_EDGES_HZ, scipy.fft.rfftfreq(n, 1.0 / rate), side="right"
    )
    return bands


def _band_energies(qf: npt.NDArray[np.complex64], nfft: int, rate: int) -> F64:
    """Mean energy per hop in each :data:`BAND_EDGES_HZ` band of program hops' spectra
    ``qf`` ((S, nfft // 2 + 1, C), as :class:`_HopStats` keeps them), channels summed."""
    per_bin = (np.abs(qf) ** 2).sum(axis=(0, 2), dtype=np.float64)
    bands = np.bincount(_bands_of(nfft, rate), per_bin, minlength=len(BAND_EDGES_HZ) + 1)
    out: F64 = bands / max(qf.shape[0], 1)
    return out


def candidate_hops(
    ex: F64, ep: F64, quiet: npt.NDArray[np.bool_], usable: npt.NDArray[np.bool_], per_window: int
) -> npt.NDArray[np.intp]:
    """Hops worth fitting on: every usable hop in ``quiet`` (the count-in) where the program
    sounds (or has just sounded), plus, in every span of ``per_window`` hops, those where the
    recording is least loud relative to the program (a quiet singer leaves only bleed and
    noise), at most :data:`MAX_HOPS_PER_WINDOW`.  Fitting then keeps only those the fit explains.

    Parameters
    ----------
    ex, ep : ndarray (hops,)
        Mean square of the recording and of the program per hop.
    quiet : ndarray of bool (hops,)
        Hops presumed quiet (the count-in).
    usable : ndarray of bool (hops,)
        Hops inside the recording and outside its gaps and the headset's slips.
    per_window : int
        Hops per selection span.
    """
    heard = ep > 1e-12
    heard[1:] |= heard[:-1]  # the leak of a program's last frames rings into the next hop
    sounding = usable & heard
    chosen = quiet & sounding
    ratio = np.full(ex.shape, np.inf)
    ratio[sounding] = ex[sounding] / np.maximum(ep[sounding], 1e-12)
    for lo in range(0, len(ex), per_window):
        r = ratio[lo : lo + per_window]
        order = np.argsort(r, kind="stable")[:MAX_HOPS_PER_WINDOW]
        order = order[np.isfinite(r[order])]
        if not len(order):
            continue
        floor = r[order[0]]
        # a hop more than 20 dB louder (for its program) than the quietest is surely sung
        order = order[r[order] <= 100.0 * floor]
        chosen[lo + order] = True
    idx: npt.NDArray[np.intp] = np.flatnonzero(chosen)
    return idx[_spread(len(idx), MAX_FIT_HOPS)]


class _HopStats:
    """Per-hop sufficient statistics of the least-squares fit (all hops at once, by FFT)."""

    _CHUNK = 64  # hops transformed at a time (bounds the temporaries: ~6 MB)

    def __init__(self, xs: Floats, q: Floats, times: F64, layout: FitLayout) -> None:
        # xs: (S, H) recording; q: (S, H + taps - 1, C) program with the filter's context
        s, h = xs.shape
        c = q.shape[2]
        taps = layout.taps
        self.taps, self.channels, self.hop = taps, c, h
        n = scipy.fft.next_fast_len(h + taps - 1, real=True)
        self.nfft = n
        self.xs = xs
        self.exx = np.einsum("ij,ij->i", xs, xs, dtype=np.float64)
        self.qf = np.empty((s, n // 2 + 1, c), np.complex64)  # for predictions
        self.r = np.empty((s, c, taps))
        self.row = np.empty((s, c, c, taps))
        for lo in range(0, s, self._CHUNK):
            hi = min(s, lo + self._CHUNK)
            qc = q[lo:hi].astype(np.float64)  # the statistics in double precision
            qf = scipy.fft.rfft(qc, n=n, axis=1)  # (s, F, C)
            xf = scipy.fft.rfft(xs[lo:hi].astype(np.float64), n=n, axis=1)  # (s, F)
            zf = scipy.fft.rfft(qc[:, taps - 1 :, :], n=n, axis=1)  # the hop's own program
            self.qf[lo:hi] = qf
            # r[s, c, k] = Σ_n x[n] q_c[n + taps-1 - k]
            v = scipy.fft.irfft(qf * np.conj(xf)[:, :, None], n=n, axis=1)[:, :taps, :]
            self.r[lo:hi] = np.transpose(v[:, ::-1, :], (0, 2, 1))
            # first rows: R_ab[0, j] = Σ_n q_a[n + taps-1] q_b[n + taps-1 - j]
            g = scipy.fft.irfft(qf[:, :, None, :] * np.conj(zf)[:, :, :, None], n=n, axis=1)
            self.row[lo:hi] = np.transpose(g[:, taps - 1 :: -1, :, :], (0, 2, 3, 1))
        # edge terms of the diagonal recursion R[i+1, j+1] = R[i, j] + u_i u_j - w_i w_j,
        # flattened channel-major; a hop's end edge is its successor's start edge, so over a
        # run of equally weighted hops only the run's two ends remain
        self.u = np.transpose(q[:, taps - 2 :: -1, :][:, : taps - 1, :], (0, 2, 1)).reshape(s, -1)
        self.w = np.transpose(q[:, h + taps - 2 : h - 1 : -1, :], (0, 2, 1)).reshape(s, -1)
        self.follows = np.zeros(s, dtype=bool)  # hop s starts where hop s - 1 ends
        self.follows[1:] = np.diff(times) == h

    def normal(self, weights: F64) -> tuple[F64, F64]:
        """The weighted normal equations ``R h = r`` over the hops (weights (S,)), flattened
        to (C·taps, C·taps) and (C·taps,)."""
        c, taps = self.channels, self.taps
        row = np.einsum("s,sabj->abj", weights, self.row)
        rr = np.einsum("s,sck->ck", weights, self.r)
        prev = np.zeros_like(weights)
        prev[1:] = np.where(self.follows[1:], weights[:-1], 0.0)
        has_next = np.zeros(len(weights), dtype=bool)
        has_next[:-1] = self.follows[1:]
        cu = weights - prev  # start edges: where the weight steps
        cw = np.where(has_next, 0.0, -weights)  # end edges that are no hop's start
        m = np.zeros((self.u.shape[1], self.u.shape[1]))
        for vecs, coef in ((self.u, cu), (self.w, cw)):
            nz = np.flatnonzero(coef)
            if len(nz):
                a = vecs[nz].astype(np.float64)
                m += (a.T * coef[nz]) @ a
        m4 = m.reshape(c, taps - 1, c, taps - 1)
        big = np.empty((c, taps, c, taps))
        big[:, 0, :, :] = row  # R_ab[0, j]
        big[:, :, :, 0] = np.transpose(row, (1, 2, 0))  # R_ab[i, 0] = R_ba[0, i]
        for i in range(taps - 1):
            big[:, i + 1, :, 1:] = big[:, i, :, :-1] + m4[:, i, :, :]
        return big.reshape(c * taps, c * taps), rr.reshape(c * taps)

    def _predictions(
        self, spec: npt.NDArray[np.complex64], k: npt.NDArray[np.intp], w: F64
    ) -> Iterator[tuple[int, int, F64]]:
        """The predicted bleed of hops ``[lo, hi)``, a chunk at a time, each hop's filter
        spectrum being ``(1 - w) · spec[k] + w · spec[k + 1]`` (spec (K, F, C))."""
        t = self.taps
        for lo in range(0, self.xs.shape[0], self._CHUNK):
            hi = min(self.xs.shape[0], lo + self._CHUNK)
            wc = w[lo:hi, None, None].astype(np.float32)
            kc = k[lo:hi]
            spectra = (1 - wc) * spec[kc] + wc * spec[np.minimum(kc + 1, len(spec) - 1)]
            y = scipy.fft.irfft(
                np.einsum("sfc,sfc->sf", self.qf[lo:hi], spectra), n=self.nfft, axis=1
            )
            yield lo, hi, y[:, t - 1 : t - 1 + self.hop]

    def residual(self, spec: npt.NDArray[np.complex64], k: npt.NDArray[np.intp], w: F64) -> F64:
        """Energy per hop of the recording minus its predicted bleed (filters as in
        :meth:`_predictions`)."""
        out = np.empty(self.xs.shape[0])
        for lo, hi, y in self._predictions(spec, k, w):
            d = self.xs[lo:hi] - y
            out[lo:hi] = np.einsum("ij,ij->i", d, d, dtype=np.float64)
        return out

    def band_terms(
        self, spec: npt.NDArray[np.complex64], k: npt.NDArray[np.intp], w: F64,
        hops: npt.NDArray[np.bool_], band_of_bin: npt.NDArray[np.intp], bands: int,
    ) -> tuple[F64, F64, F64]:  # fmt: skip
        """For each of the ``hops``, per band: the recording's energy, its cross term with
        the predicted bleed (real part) and the prediction's energy, each (hops, bands) (the
        hop's spectrum's bins numbered by ``band_of_bin``; filters as in
        :meth:`_predictions`)."""
        onehot = np.zeros((len(band_of_bin), bands))
        onehot[np.arange(len(band_of_bin)), band_of_bin] = 1.0
        # windowed: a band far louder than the others leaks into them through a bare hop's
        # sidelobes (−13 dB), and its error would be counted against them
        window = scipy.signal.get_window("hann", self.hop)
        parts: list[tuple[F64, F64, F64]] = []
        for lo, hi, y in self._predictions(spec, k, w):
            mine = hops[lo:hi]
            if not mine.any():
                continue
            xf = scipy.fft.rfft(self.xs[lo:hi][mine].astype(np.float64) * window, axis=1)
            yf = scipy.fft.rfft(y[mine].astype(np.float64) * window, axis=1)
            cross = (xf * np.conj(yf)).real
            parts.append((np.abs(xf) ** 2 @ onehot, cross @ onehot, np.abs(yf) ** 2 @ onehot))
        if not parts:
            empty = np.zeros((0, bands))
            return empty, empty, empty
        xx, xy, yy = (np.concatenate(t) for t in zip(*parts, strict=True))
        return xx, xy, yy


def _solve(r_mat: F64, r_vec: F64, prior: F64 | None, strength: float) -> F64:
    """Ridge solution of ``R h = r``, pulled towards ``prior`` (or 0) with weight ``strength``
    times the mean diagonal of ``R``."""
    d = r_mat.shape[0]
    lam = strength * max(float(np.trace(r_mat)) / d, 1e-30)
    rhs = r_vec + (lam * prior if prior is not None else 0.0)
    sol: F64 = scipy.linalg.solve(r_mat + lam * np.eye(d), rhs, assume_a="pos")
    return sol


#: Ridge of the whole-take fit (relative to the mean diagonal): keeps it finite where the
#: program has no energy.
_RIDGE = 1e-6
#: Ridge of a window's fit towards the whole-take fit: where the window's program excites
#: little (a count-in of clicks only), it keeps the whole-take filter.
_WINDOW_PULL = 3e-3


class _Fitter:
    """Fits over subsets of the candidate hops: whole take, and per window."""

    def __init__(self, stats: _HopStats, times: F64, layout: FitLayout) -> None:
        self.stats, self.times, self.layout = stats, times, layout
        span = max(times[-1] - times[0], 1.0)
        k = max(1, int(np.ceil(span / layout.window)) + 1)
        self.grid = np.linspace(times[0], times[-1], k) if k > 1 else times[:1].copy()
        self.centres = self.grid.copy()

    def _runs(self, keep: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
        """A run number per hop: consecutive kept hops share one."""
        start = keep & ~(np.concatenate(([False], keep[:-1])) & self.stats.follows)
        runs: npt.NDArray[np.intp] = np.cumsum(start) - 1
        return runs

    def fit(self, keep: npt.NDArray[np.bool_], windows: bool = True, equalise: bool = False) -> F64:
        """Window filters (K, C, taps) from the hops ``keep`` (or, with ``windows`` False, the
        whole-take filter (C, taps)); each window's centre moves to the mean time of what it
        was fitted on (:attr:`centres`).  With ``equalise`` each run of consecutive hops weighs
        by the inverse of its mean energy, so that sung hops among them cannot dominate."""
        c, taps = self.stats.channels, self.stats.taps
        runs = self._runs(keep)
        n_runs = int(runs[keep].max()) + 1 if keep.any() else 0
        if not n_runs:
            raise AudioError("bleed: no hop to fit on")
        counts = np.bincount(runs[keep], minlength=n_runs)
        base = np.ones(n_runs)
        if equalise:
            energy = np.bincount(runs[keep], self.stats.exx[keep], minlength=n_runs) / counts
            base = 1.0 / np.maximum(energy, 1e-20)
        run_of = np.clip(runs, 0, None)
        r_mat, r_vec = self.stats.normal(np.where(keep, base[run_of], 0.0))
        whole = _solve(r_mat, r_vec, None, _RIDGE)
        if not windows:
            return whole.reshape(c, taps)
        out = np.empty((len(self.centres), c, taps))
        if len(self.centres) == 1:
            out[0] = whole.reshape(c, taps)
            return out
        # each run weighs in a window by the triangle at the run's middle (constant along a
        # run, so that only its two ends enter the normal equations' edge terms)
        mid = np.bincount(runs[keep], self.times[keep], minlength=n_runs) / counts
        centres = self.grid.copy()
        for i, centre in enumerate(self.grid):
            tri = np.clip(1.0 - np.abs(mid - centre) / self.layout.window, 0.0, None)
            wts = np.where(keep, (base * tri)[run_of], 0.0)
            if not wts.any():
                out[i] = whole.reshape(c, taps)
                continue
            rm, rv = self.stats.normal(wts)
            out[i] = _solve(rm, rv, whole, _WINDOW_PULL).reshape(c, taps)
            centres[i] = float(np.sum(wts * self.times) / np.sum(wts))
        # a window at the take's edge sees data on one side only: its filter belongs there
        self.centres = np.maximum.accumulate(centres) + np.arange(len(centres)) * 1e-3
        return out

    def _spectra(self, filters: F64) -> npt.NDArray[np.complex64]:
        """The filters' (K, C, taps) spectra, (K, F, C)."""
        spec = scipy.fft.rfft(filters, n=self.stats.nfft, axis=2)  # (K, C, F)
        return np.ascontiguousarray(np.transpose(spec, (0, 2, 1)), dtype=np.complex64)

    def residual_by(self, filters: F64, k: npt.NDArray[np.intp]) -> F64:
        """Energy per hop of the recording minus the prediction of ``filters[k]`` (a filter
        chosen per hop)."""
        return self.stats.residual(self._spectra(filters), k, np.zeros(len(k)))

    def _per_hop(self, filters: F64) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.intp], F64]:
        """The window ``filters``' (K, C, taps) spectra, and per hop the window before it and
        the weight of the next, interpolated as :meth:`LeakFit.filter_at` does."""
        spec = self._spectra(filters)
        if len(self.centres) == 1 or len(filters) == 1:
            n = len(self.times)
            return spec[:1], np.zeros(n, dtype=np.intp), np.zeros(n)
        k, w = _between(self.centres, self.times)
        return spec, k, w

    def residual(self, filters: F64) -> F64:
        """Energy per hop of the recording minus the prediction of the window ``filters``."""
        return self.stats.residual(*self._per_hop(filters))

    def band_terms(self, filters: F64, hops: npt.NDArray[np.bool_]) -> tuple[F64, F64, F64]:
        """:meth:`_HopStats.band_terms` of the window ``filters`` over ``hops``, per
        :data:`BAND_EDGES_HZ` band: each (hops, bands)."""
        band_of_bin = _bands_of(self.stats.hop, self.layout.rate)
        bands = len(BAND_EDGES_HZ) + 1
        return self.stats.band_terms(*self._per_hop(filters), hops, band_of_bin, bands)


def fit_leak(
    xs: Floats,
    q: Floats,
    times: F64,
    layout: FitLayout,
    *,
    windows: bool = True,
    start: F64 | None = None,
    changing: bool | None = None,
    sample: tuple[Floats, Floats, F64] | None = None,
) -> LeakFit:
    """Fit the leak path on candidate hops (from :func:`candidate_hops`).

    Parameters
    ----------
    xs : ndarray (S, hop)
        The recording (mono) in each candidate hop.
    q : ndarray (S, hop + taps - 1, C)
        The program in each hop with the filter's context: ``q[s, m]`` is the program at
        timeline frame ``start_s - (taps - 1 - pre) + m`` (see :attr:`FitLayout.context`).
    times : ndarray (S,)
        Timeline frame of each hop's start (increasing).
    layout : FitLayout
    windows : bool
        False: stop after the whole-take fit and its check (a cheap look for a leak, e.g. on
        :func:`probe_hops` of the candidates).
    start : ndarray (C, taps), optional
        A whole-take filter to choose the quiet hops with (:func:`probe_leak`'s), instead of
        a first fit on every candidate.
    changing : bool, optional
        Whether fits per quarter of the take explain clearly more than the whole-take fit
        (:attr:`LeakFit.changing` of :func:`probe_leak`, which tells it on a tenth of the
        hops); None: found out here.
    sample : (xs, q, times), optional
        Hops spread over the whole recording where the program sounds, as ``xs``, ``q``
        and ``times``: a band the candidates cannot test is tested there (:func:`_shaped`).

    Returns
    -------
    LeakFit
        With ``reason`` set when the fit is not to be trusted (too few quiet hops, or it does
        not lower the energy of quiet hops it was not fitted on by :data:`MIN_GAIN_DB`).
    """
    n_hops = xs.shape[0]
    c = q.shape[2] if q.ndim == 3 else 0
    empty = LeakFit(layout, np.zeros(1), np.zeros((1, max(c, 1), layout.taps)))
    if n_hops < MIN_HOPS:
        empty.reason = "no quiet passage"
        return empty
    stats = _HopStats(xs, q, times.astype(np.float64), layout)
    fitter = _Fitter(stats, times.astype(np.float64), layout)
    ex = stats.exx
    # first pass: every candidate, each run of hops weighted to equal energy, so that sung
    # hops among them cannot dominate; then keep the hops the fit explains and fit on those
    every = np.ones(n_hops, dtype=bool)
    if start is None:
        whole = fitter.fit(every, windows=False, equalise=True)[None]
    else:
        whole = start[None]
    keep = every
    for explained in (0.3, 0.3):
        keep = _explained(fitter.residual(whole), ex, explained)
        if keep.sum() < MIN_HOPS:
            empty.reason = "no quiet passage"
            return empty
        whole = fitter.fit(keep, windows=False)[None]
    gain = _cross_validated_gain(fitter, keep)
    if not gain >= MIN_GAIN_DB:
        empty.reason = f"no leak found ({gain:.1f} dB)"
        return empty
    quiet_s = float(keep.sum() * layout.hop / layout.rate)
    res = fitter.residual(whole)
    lowered = 10.0 * float(np.log10(ex[keep].sum() / max(res[keep].sum(), 1e-30)))
    if not windows:
        stepped = _quarters_explain_more(fitter, keep, res)
        return LeakFit(layout, fitter.grid[:1], whole.copy(), lowered, quiet_s, changing=stepped)
    if changing is None:
        changing = _quarters_explain_more(fitter, keep, res)
    if not (changing or _changes(res[keep])):
        fit = LeakFit(layout, fitter.grid[:1], whole.copy(), lowered, quiet_s)
        return _shaped(fit, fitter, keep, sample)
    # the path changed during the take: per window, so that it is followed; the selection
    # starts again from every candidate, since a changed path is what made the whole-take
    # fit miss some quiet hops
    filters = fitter.fit(every, equalise=True)
    keep = _explained(fitter.residual(filters), ex, 0.1)
    if keep.sum() < MIN_HOPS:
        empty.reason = "no quiet passage"
        return empty
    filters = fitter.fit(keep)
    res = fitter.residual(filters)
    lowered = 10.0 * float(np.log10(ex[keep].sum() / max(res[keep].sum(), 1e-30)))
    quiet_s = float(keep.sum() * layout.hop / layout.rate)
    result = LeakFit(layout, fitter.centres, filters, lowered, quiet_s)
    if not lowered >= MIN_GAIN_DB:
        result.reason = f"no leak found ({lowered:.1f} dB)"
    return _shaped(result, fitter, keep, sample)


def _quarters_explain_more(fitter: _Fitter, keep: npt.NDArray[np.bool_], res: F64) -> bool:
    """Whether a fit per quarter of the take leaves clearly less in the quiet hops than the
    whole-take fit's ``res``: a path that changed (a headset moved) leaves the whole-take
    fit's compromise in every hop, which :func:`_changes` cannot tell from room noise."""
    span = max(float(fitter.times[-1] - fitter.times[0]), 1.0)
    quarter = np.minimum((fitter.times - fitter.times[0]) * 4 // span, 3).astype(np.intp)
    filters = []
    for i in range(4):
        mine = keep & (quarter == i)
        if mine.sum() < MIN_HOPS:
            return False  # too little to tell: the whole-take fit stays
        filters.append(fitter.fit(mine, windows=False))
    left = fitter.residual_by(np.stack(filters), quarter)
    return bool(res[keep].sum() > 10 ** (MIN_GAIN_DB / 10) * left[keep].sum())


def _changes(res: F64) -> bool:
    """Whether what a whole-take fit leaves in the quiet hops is well above their quietest
    fifth (the room noise): the leak path changed during the take (or the singer was not
    quite quiet), and window fits may follow it."""
    return bool(res.mean() > 3.0 * np.percentile(res, 20))


def probe_leak(xs: Floats, q: Floats, times: F64, layout: FitLayout) -> LeakFit:
    """A cheap look for a leak (on :func:`probe_hops` of the candidates): the whole-take fit
    and its check, with the full filter (a shorter one misses a leak that arrives late,
    after a latency measured a few ms short).  Its filter is where :func:`fit_leak` starts."""
    return fit_leak(xs, q, times, layout, windows=False)


def probe_hops(n: int) -> npt.NDArray[np.intp]:
    """At most :data:`PROBE_HOPS` of ``n`` candidate hops, spread evenly over them."""
    return _spread(n, PROBE_HOPS)


def _spread(n: int, most: int) -> npt.NDArray[np.intp]:
    """At most ``most`` of ``range(n)``, spread evenly."""
    if n <= most:
        return np.arange(n, dtype=np.intp)
    picked: npt.NDArray[np.intp] = np.unique(np.linspace(0, n - 1, most).round().astype(np.intp))
    return picked


def plainly_kept(fit: LeakFit, fitted: F64, sounding: F64) -> LeakFit:
    """``fit``, when it is not to be used, with a reason that says what the recording shows
    where the program sounds (mean squares ``sounding``): silence, or a singer never quiet,
    the hops the fit was tried on (``fitted``) hardly quieter than the rest, so that finding
    no leak there says nothing about it."""
    if fit.usable or not len(sounding):
        return fit
    if not np.any(sounding):
        return dataclasses.replace(fit, reason=SILENT_REASON)
    if len(fitted) and np.median(sounding) < 10.0 ** (NEVER_QUIET / 10.0) * np.median(fitted):
        return dataclasses.replace(fit, reason=NEVER_QUIET_REASON)
    return fit


def _explained(res: F64, ex: F64, share: float) -> npt.NDArray[np.bool_]:
    """Hops whose residual is at most ``share`` of their energy, or near the quietest
    residuals (the room noise): hops where the singer is quiet."""
    floor = float(np.percentile(res, 20))
    keep: npt.NDArray[np.bool_] = (res <= np.maximum(4.0 * floor, share * ex)) & (ex > 0)
    return keep


def _cross_validated_gain(fitter: _Fitter, keep: npt.NDArray[np.bool_]) -> float:
    """dB by which whole-take fits on alternate seconds of the quiet hops lower the energy of
    the other seconds' quiet hops."""
    before = after = 0.0
    for train, other in _folds(fitter, keep):
        test = keep & other
        res = fitter.residual(fitter.fit(train, windows=False)[None])
        before += float(fitter.stats.exx[test].sum())
        after += float(res[test].sum())
    if before <= 0 or after <= 0:
        return float("nan") if before <= 0 else float("inf")
    return 10.0 * float(np.log10(before / after))


def _folds(
    fitter: _Fitter, keep: npt.NDArray[np.bool_]
) -> Iterator[tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]]:
    """(train, other): the quiet hops of even seconds and every hop of odd seconds, and the
    other way round (a fold with too few hops to fit on, or none to test, is left out)."""
    odd = (fitter.times // fitter.layout.rate).astype(np.int64) % 2 == 1
    for other in (odd, ~odd):
        train = keep & ~other
        if train.sum() >= MIN_HOPS // 2 and (keep & other).any():
            yield train, other


def _held_out_scale(
    fitter: _Fitter, keep: npt.NDArray[np.bool_], windows: bool
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Per band, the least-squares scale of held-out predictions (what lowers the held-out
    energy most) and whether it was measured (the band holds at least :data:`_MEASURED` of
    the held-out prediction): fits (per window with ``windows``) on the quiet hops of
    alternate seconds, tested on *every* candidate hop of the other seconds (quiet hops
    chosen by the fit agree with it, so they cannot tell where it is wrong)."""
    centres = fitter.centres.copy()  # fitting per window moves them: the fit's stay
    xy, yy = np.zeros((2, len(BAND_EDGES_HZ) + 1))
    for train, other in _folds(fitter, keep):
        filters = fitter.fit(train, windows=windows)
        _, cross, own = fitter.band_terms(filters if windows else filters[None], other)
        xy, yy = xy + cross.sum(axis=0), yy + own.sum(axis=0)
    fitter.centres = centres
    measured = yy >= _MEASURED * yy.sum()
    scale: F64 = np.divide(xy, yy, out=np.ones_like(xy), where=measured)
    return scale, measured


def _sample_fitter(
    sample: tuple[Floats, Floats, F64], fitter: _Fitter, keep: npt.NDArray[np.bool_]
) -> _Fitter | None:
    """A fitter over the ``sample`` hops (spread over the whole recording, as
    :func:`fit_leak`'s hops) that ``fitter`` did not fit on; None when there are none."""
    xs, q, times = sample
    fresh = ~np.isin(times, fitter.times[keep])
    if not fresh.any():
        return None
    return _Fitter(_HopStats(xs[fresh], q[fresh], times[fresh], fitter.layout), times[fresh],
                   fitter.layout)  # fmt: skip


def _sample_scale(fit: LeakFit, other: _Fitter) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Per band, the least-squares scale of ``fit``'s prediction on the hops of ``other``
    (:func:`_sample_fitter`) and whether it is clearly wrong there (:data:`_SAMPLE_FLOOR`):
    what subtracting the band would do where the singer sings too."""
    other.centres = fit.centres
    every = np.ones(len(other.times), dtype=bool)
    _, cross, own = other.band_terms(fit.filters, every)
    xy, yy = cross.sum(axis=0), own.sum(axis=0)
    some = yy > 0
    scale: F64 = np.divide(xy, yy, out=np.ones_like(xy), where=some)
    # its standard error, from the hops' spread about the scale (a voice far louder than a
    # true bleed makes it wide; a prediction as loud as the voice makes it narrow)
    spread = np.sum((cross - scale * own) ** 2, axis=0)
    error: F64 = np.divide(np.sqrt(spread), yy, out=np.full_like(yy, np.inf), where=some)
    # and only where enough hops carry the prediction for that error to mean anything (a
    # click sounds in one hop of ten: a few loud notes there are not a verdict)
    carrying = np.divide(yy**2, np.sum(own**2, axis=0), out=np.zeros_like(yy), where=some)
    return scale, (carrying >= _SAMPLE_HOPS) & (scale + 2.0 * error < _SAMPLE_FLOOR)


def _seen_enough(quiet: F64, heard: F64) -> F64:
    """Per band, how far a fit on hops whose program has the :func:`_band_energies`
    ``quiet`` can be trusted on a recording that heard ``heard``: wholly while the
    recording heard the band at most :data:`_MOST_UNSEEN` times as loud as the quiet hops
    did, then as the square of the inverse (a backing that rests when the singer does is
    fitted on almost nothing of it: the few hops where it ends under the voice)."""
    ratio = np.divide(heard, quiet, out=np.full_like(heard, np.inf), where=quiet > 0)
    out: F64 = np.where(heard > 0, np.minimum(1.0, _MOST_UNSEEN / ratio) ** 2, 1.0)
    return out


def _band_gain(fit: LeakFit) -> F64:
    """Per band, the fit's loudest power gain (mean over the band's bins, per window and ear
    cup)."""
    n = 4096
    band_of_bin = _bands_of(n, fit.layout.rate)
    power = np.abs(scipy.fft.rfft(fit.filters, n=n, axis=2)) ** 2  # (K, C, F)
    bands = len(BAND_EDGES_HZ) + 1
    counts = np.bincount(band_of_bin, minlength=bands)
    per_band = np.stack(
        [np.bincount(band_of_bin, p, minlength=bands) for p in power.reshape(-1, n // 2 + 1)]
    )
    out: F64 = (per_band / np.maximum(counts, 1)).max(axis=0)
    return out


def _shaped(
    fit: LeakFit, fitter: _Fitter, keep: npt.NDArray[np.bool_],
    sample: tuple[Floats, Floats, F64] | None,
) -> LeakFit:  # fmt: skip
    """``fit`` (fitted on the quiet hops ``keep``) with each band's response scaled by how
    far it can be trusted (:func:`_trusted`; all of it from :data:`_WHOLE_BAND` up): a
    zero-phase filter of :data:`SHAPE_S` convolved into every window's filter (the fit
    grows by its length); ``gain_db`` becomes what the shaped prediction lowers the quiet
    hops by."""
    if not fit.usable:
        return fit
    xx, xy, yy = (t.sum(axis=0) for t in fitter.band_terms(fit.filters, keep))
    trusted = _trusted(fit, fitter, keep, sample, yy)
    gains = np.where(trusted >= _WHOLE_BAND, 1.0, np.clip(trusted, 0.0, 1.0))
    if bool(np.all(gains == 1.0)):
        return fit
    if not gains.any():
        return dataclasses.replace(fit, reason="no leak found (no band can be trusted)")
    after = float(np.sum(xx - 2.0 * gains * xy + gains**2 * yy))
    lay = fit.layout
    half = round(SHAPE_S / 2 * lay.rate)
    shape = scipy.signal.firwin2(2 * half + 1, *_band_points(gains, lay.rate), fs=lay.rate)
    filters = scipy.signal.fftconvolve(fit.filters, shape[None, None, :], axes=2)
    layout = dataclasses.replace(lay, taps=lay.taps + 2 * half, pre=lay.pre + half)
    lowered = 10.0 * float(np.log10(xx.sum() / after)) if after > 0 else fit.gain_db
    return LeakFit(layout, fit.centres, filters, lowered, fit.quiet_s, changing=fit.changing)


def _trusted(
    fit: LeakFit, fitter: _Fitter, keep: npt.NDArray[np.bool_],
    sample: tuple[Floats, Floats, F64] | None, predicted: F64,
) -> F64:  # fmt: skip
    """Per band, how much of ``fit``'s prediction to subtract (``predicted``: its energy
    per band on the quiet hops), the least of:

    - :func:`_held_out_scale`, where measured;
    - :func:`_sample_scale`, where it is clearly wrong;
    - :func:`_seen_enough` of the quiet hops' program against the sample's;
    - 0 where the fit's power gain passes its gain in the band that carries most of its
      prediction by :data:`_MOST_ABOVE` (a leak path has no such peak: it is noise fitted
      where the quiet hops had little of the program)."""
    scale, measured = _held_out_scale(fitter, keep, windows=len(fit.filters) > 1)
    trusted: F64 = np.where(measured, scale, 1.0)
    other = None if sample is None else _sample_fitter(sample, fitter, keep)
    if other is not None:
        scale, wrong = _sample_scale(fit, other)
        trusted = np.minimum(trusted, np.where(wrong, scale, 1.0))
        rate = fitter.layout.rate
        quiet = _band_energies(fitter.stats.qf[keep], fitter.stats.nfft, rate)
        heard = _band_energies(other.stats.qf, other.stats.nfft, rate)
        trusted = np.minimum(trusted, _seen_enough(quiet, heard))
    gain = _band_gain(fit)
    ceiling = float(gain[int(np.argmax(predicted))]) * _MOST_ABOVE
    out: F64 = np.where(gain > ceiling, 0.0, trusted)
    return out


def _band_points(gains: F64, rate: int) -> tuple[list[float], list[float]]:
    """Frequencies and gains for :func:`scipy.signal.firwin2` (linear between them): each
    band's gain across the band, changing over the filter's resolution at its edges."""
    nyquist = rate / 2
    step = 0.5 / SHAPE_S  # half the shaping filter's resolution, Hz
    freqs, values = [0.0], [float(gains[0])]
    for k, edge in enumerate(BAND_EDGES_HZ):
        if edge + step >= nyquist:
            break
        freqs += [edge - step, edge + step]
        values += [float(gains[k]), float(gains[k + 1])]
    freqs.append(nyquist)
    values.append(values[-1])
    return freqs, values


def predict(fit: LeakFit, q: F32, t0: int) -> F32:
    """The bleed in timeline frames ``[t0, t0 + n)`` from the program around them.

    Parameters
    ----------
    fit : LeakFit
    q : ndarray (n + taps - 1, C)
        The program at timeline frames ``[t0 - before, t0 + n + after)`` (``before``,
        ``after`` from :attr:`FitLayout.context`).
    t0 : int
        Timeline frame of the first output frame.

    Returns
    -------
    ndarray (n,)
        The predicted bleed, float32 (computed in single precision: its error is far below
        what a 24-bit file holds).  The filter is the one at the range's centre (ranges
        of a few thousand frames follow a slowly changing path closely).
    """
    taps = fit.layout.taps
    n = q.shape[0] - taps + 1
    nfft = scipy.fft.next_fast_len(q.shape[0], real=True)
    qf = scipy.fft.rfft(q, n=nfft, axis=0)
    hf = fit.spectrum_at(t0 + n / 2, nfft)
    spec = qf[:, 0] * hf[:, 0]
    for c in range(1, q.shape[1]):  # channel by channel: numpy's sum over a short axis is slow
        spec += qf[:, c] * hf[:, c]
    y: F32 = scipy.fft.irfft(spec, n=nfft)[taps - 1 : taps - 1 + n]
    return y
