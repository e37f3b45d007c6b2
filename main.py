"""CCNN command line: ``python main.py key=value ...`` (see README)."""

from ccnn.apps.ccnn_main import main

if __name__ == "__main__":
    main()
