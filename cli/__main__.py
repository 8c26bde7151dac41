"""``python -m eraflow.cli`` runs the ``eraflow`` command."""

from . import main

main()
