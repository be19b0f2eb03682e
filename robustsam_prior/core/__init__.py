"""The plumbing every layer uses: image files (``io``), atomic files, folder locks and JSON (``fileio``),
checkpoints (``checkpoint``), registries (``registry``), lazy package exports (``lazy``), option fields
(``fields``), the package version (``versions``) and device names (``devices``).

It imports nothing from the rest of the project (``tests/test_import_graph.py`` checks it).
"""
