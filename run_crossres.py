"""FlexConv cross-resolution runs: ``python run_crossres.py key=value ...`` (docs/flexconv.md)."""

from ccnn.apps.flexconv_main import run_crossres_main

if __name__ == "__main__":
    run_crossres_main()
