"""FlexConv command line: ``python run_experiment.py key=value ...`` (see docs/flexconv.md)."""

from ccnn.apps.flexconv_main import run_experiment_main

if __name__ == "__main__":
    run_experiment_main()
