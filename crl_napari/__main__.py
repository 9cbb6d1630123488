"""``python -m crl_napari``: the command line, as torchrun starts it (``torchrun ... -m crl_napari train ...``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
