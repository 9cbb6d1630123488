"""The npe2 manifest of the napari plugin, shipped as the package ``crl_napari._manifest``.

``plugin_manifest/napari.yaml`` is the single source; pyproject.toml maps this folder to the package
``crl_napari._manifest`` (``[tool.setuptools.package-dir]``) so the wheel and the editable install both
expose it to the ``napari.manifest`` entry point ``crl_napari._manifest:napari.yaml``.
"""
