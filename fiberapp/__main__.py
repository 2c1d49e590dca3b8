"""`python -m fiberapp` is the `fiberapp` command (used by `fiberapp start` to launch the daemon)."""
from fiberapp.cli import main

main()
