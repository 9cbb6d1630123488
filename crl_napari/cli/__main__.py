"""`python -m crl_napari.cli`: the command line."""

from . import main

raise SystemExit(main())
