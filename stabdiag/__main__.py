"""``python -m stabdiag`` runs the command-line interface."""

from stabdiag.cli import main

if __name__ == "__main__":
    main()
