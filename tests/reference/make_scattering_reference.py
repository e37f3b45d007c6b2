"""Regenerate ``scattering_filters.npz``: Kymatio's own filters on K×K grids.

Run with Kymatio importable (it is NOT a dependency of ccnn), e.g.::

    pip install --target /tmp/kymref kymatio
    PYTHONPATH=/tmp/kymref python tests/reference/make_scattering_reference.py

Stored for each K in KS and L in LS (Kymatio 0.3.0; the version is recorded in the file),
with ``mor(...) = morlet_2d(K, K, 0.8, θ_ℓ, 3π/4, 4/L, ...)`` and ``fb = filter_bank(K, K, 1, L)``:

* ``psi_offset_K{K}_L{L}`` (L, K, K) complex64: ``mor(offset=-(K//2))``
* ``psi_shift_K{K}_L{L}``  (L, K, K) complex64: ``fftshift(mor())``
* ``psi_bank_K{K}_L{L}``   (L, K, K) complex128: ``fftshift(ifft2(fb['psi'][ℓ]['levels'][0]))``
* ``phi_offset_K{K}``      (K, K) float32: ``real(gabor_2d(K, K, 0.8, 0, 0, offset=-(K//2)))``
* ``phi_bank_K{K}_L{L}``   (K, K) float64: ``real(fftshift(ifft2(fb['phi']['levels'][0])))``

with θ_ℓ = (int(L − L/2 − 1) − ℓ)·π/L (Kymatio's order).
"""

from pathlib import Path

import kymatio
import numpy as np
from kymatio.scattering2d.filter_bank import filter_bank, gabor_2d, morlet_2d

KS = (3, 5, 7)
LS = (1, 3, 4, 8)
OUT = Path(__file__).with_name("scattering_filters.npz")


def main() -> None:
    arrays = {"kymatio_version": np.array(kymatio.__version__)}
    for K in KS:
        arrays[f"phi_offset_K{K}"] = np.real(gabor_2d(K, K, 0.8, 0, 0, offset=-(K // 2)))
        for L in LS:
            thetas = [(int(L - L / 2 - 1) - ell) * np.pi / L for ell in range(L)]
            arrays[f"psi_offset_K{K}_L{L}"] = np.stack(
                [morlet_2d(K, K, 0.8, t, 3 / 4 * np.pi, 4 / L, offset=-(K // 2)) for t in thetas]
            )
            arrays[f"psi_shift_K{K}_L{L}"] = np.stack(
                [np.fft.fftshift(morlet_2d(K, K, 0.8, t, 3 / 4 * np.pi, 4 / L)) for t in thetas]
            )
            bank = filter_bank(K, K, 1, L)
            arrays[f"psi_bank_K{K}_L{L}"] = np.stack(
                [np.fft.fftshift(np.fft.ifft2(p["levels"][0])) for p in bank["psi"]]
            )
            arrays[f"phi_bank_K{K}_L{L}"] = np.real(
                np.fft.fftshift(np.fft.ifft2(bank["phi"]["levels"][0]))
            )
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(arrays)} arrays)")


if __name__ == "__main__":
    main()
