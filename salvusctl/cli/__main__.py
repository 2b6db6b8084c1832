"""C{python -m salvusctl.cli}."""

from salvusctl.cli.main import main

main()
