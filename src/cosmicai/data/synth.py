"""Synthetic SDSS-like galaxies whose images and magnitudes carry redshift the way real ones do.

Each galaxy gets a redshift from a Gamma(3, 0.15) distribution (median ~0.4), a type between
early (red, 4000 A break, de Vaucouleurs-like) and late (blue, exponential disc), and an absolute
magnitude. Observed u,g,r,i,z magnitudes follow from a flat LCDM distance modulus and the
redshifted rest-frame SED (so colours redden as the break moves through the bands); images are
Sersic profiles whose angular size shrinks with the angular-diameter distance, blurred by a
Gaussian PSF and given sky noise, in nanomaggies on SDSS's 0.396"/pixel grid.
"""

from __future__ import annotations

import os

import numpy as np

from cosmicai.atomic import atomic_path
from cosmicai.data.dataset import DatasetWriter

BAND_WAVELENGTH_A = np.array([3551.0, 4686.0, 6166.0, 7480.0, 8932.0])
PSF_SIGMA_PIX = np.array([1.7, 1.6, 1.5, 1.45, 1.5])
SKY_SIGMA_NMGY = np.array([0.06, 0.02, 0.025, 0.035, 0.09])
MAG_ERR_FLOOR = np.array([0.05, 0.02, 0.02, 0.02, 0.03])
PIXEL_ARCSEC = 0.396
CHUNK = 2048  # rows generated per random stream: fixes the output for a seed, whatever n is


def _cosmology_tables(h0: float = 70.0, omega_m: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Redshift grid, luminosity distance and angular-diameter distance (Mpc), flat LCDM."""
    z = np.linspace(0.0, 3.0, 3001)
    inv_e = 1.0 / np.sqrt(omega_m * (1 + z) ** 3 + (1 - omega_m))
    comoving = 299792.458 / h0 * np.concatenate([[0.0], np.cumsum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(z))])
    return z, comoving * (1 + z), comoving / (1 + z)


_Z_GRID, _D_L, _D_A = _cosmology_tables()


def _rest_sed_mag(log_wave: np.ndarray, early: np.ndarray) -> np.ndarray:
    """Rest-frame SED in AB magnitudes (relative) at log10 wavelength; early types have a strong 4000 A break."""
    break_amp = 0.3 + 1.1 * early
    slope = 0.6 + 1.2 * early  # red continuum: fainter at short wavelengths
    step = break_amp / (1 + np.exp((log_wave - np.log10(4000.0)) / 0.02))
    return -slope * (log_wave - np.log10(6166.0)) * 2.5 + step


def _galaxies(n: int, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    z = np.clip(rng.gamma(3.0, 0.15, n), 0.02, 1.6)
    early = rng.beta(0.7, 0.7, n)
    abs_mag_r = rng.normal(-21.3 - 0.5 * early, 0.9, n)
    dist_mod = 5 * np.log10(np.interp(z, _Z_GRID, _D_L) * 1e5)
    rest_log_wave = np.log10(BAND_WAVELENGTH_A[None, :] / (1 + z[:, None]))
    sed = _rest_sed_mag(rest_log_wave, early[:, None]) - _rest_sed_mag(np.log10(6166.0), early[:, None])
    true_mag = abs_mag_r[:, None] + dist_mod[:, None] + sed - 2.5 * np.log10(1 + z[:, None])
    mag_err = np.minimum(MAG_ERR_FLOOR + 0.04 * 10 ** (0.4 * (true_mag - 22.0)), 0.8)
    magnitudes = true_mag + rng.normal(0.0, 1.0, true_mag.shape) * mag_err

    # Half-light radius ~ 4 kpc for an L* galaxy, smaller for early types; angular size from D_A.
    r_kpc = 4.0 * 10 ** (-0.15 * (abs_mag_r + 21.3)) * (1.0 - 0.35 * early) * rng.lognormal(0.0, 0.2, n)
    r_pix = r_kpc / (np.interp(z, _Z_GRID, _D_A) * 1e3) * 206265.0 / PIXEL_ARCSEC
    sersic_n = 1.0 + 3.0 * early
    b_n = 2.0 * sersic_n - 1.0 / 3.0
    q = rng.uniform(0.35, 1.0, n)
    phi = rng.uniform(0.0, np.pi, n)
    centre = (size - 1) / 2 + rng.normal(0.0, 0.4, (n, 2))

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx = xx[None] - centre[:, 0, None, None]
    dy = yy[None] - centre[:, 1, None, None]
    c, s = np.cos(phi)[:, None, None], np.sin(phi)[:, None, None]
    u, v = dx * c + dy * s, (-dx * s + dy * c) / q[:, None, None]
    r = np.sqrt(u * u + v * v + 0.25) / np.maximum(r_pix, 0.3)[:, None, None]
    profile = np.exp(-b_n[:, None, None] * (r ** (1.0 / sersic_n[:, None, None]) - 1.0))
    profile /= profile.sum(axis=(1, 2), keepdims=True)

    flux = 10 ** (-0.4 * (true_mag - 22.5))  # nanomaggies
    # Gaussian PSF per band; separable, so blurring is K @ profile @ K.T (zero padding at the edges).
    offsets = np.arange(size)[:, None] - np.arange(size)[None, :]
    kernel = np.exp(-0.5 * (offsets[None] / PSF_SIGMA_PIX[:, None, None]) ** 2)
    kernel = (kernel / kernel.sum(axis=2, keepdims=True)).astype(np.float32)
    blurred = kernel[None] @ profile.astype(np.float32)[:, None] @ kernel.transpose(0, 2, 1)[None]
    images = flux.astype(np.float32)[:, :, None, None] * blurred
    images += rng.normal(0.0, 1.0, images.shape) * SKY_SIGMA_NMGY[None, :, None, None]
    return {
        "images": images.astype(np.float32),
        "magnitudes": magnitudes.astype(np.float32),
        "redshift": z.astype(np.float32),
    }


def synthesize(path: str | os.PathLike, n: int, seed: int = 0, size: int = 32, labelled: bool = True) -> None:
    """Write n synthetic galaxies (deterministic per seed) as a dataset file; object ids are seed-prefixed."""
    with atomic_path(path) as tmp:
        with DatasetWriter(tmp, n, (size, size), has_redshift=labelled) as out:
            for chunk_index, start in enumerate(range(0, n, CHUNK)):
                rows = min(CHUNK, n - start)
                g = _galaxies(rows, np.random.default_rng([seed, chunk_index]), size)
                ids = (seed + 1) * 10**10 + np.arange(start, start + rows, dtype=np.int64)
                out.write(g["images"], g["magnitudes"], ids, g["redshift"] if labelled else None)
