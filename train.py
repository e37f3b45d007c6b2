"""Seed 002 command line: ``torchrun --nproc_per_node=N train.py ...`` (see docs/scattering.md)."""

from ccnn.apps.scattering_main import main

raise SystemExit(main())
