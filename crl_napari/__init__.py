"""crl-napari: cascaded robust learning at imperfect labels (Xue et al., MICCAI 2020) for cleaning lung masks.

The engine (this package, minus ``_qt``) imports no Qt, napari or magicgui; the napari plugin lives in
``crl_napari._qt``.
"""

__version__ = "0.1.0"
