"""The plumbing every layer uses: image files (``io``), atomic files, folder locks and JSON (``fileio``),
checkpoints (``checkpoint``), registries (``registry``), lazy package exports (``lazy``), option fields
(``fields``), the package version (``versions``), device names (``devices``), progress bars that follow
the log level (``progress``) and the C allocator setting that keeps freed CPU memory (``cpu_memory``).

It imports nothing from the rest of the project (``tests/test_import_graph.py`` checks it).
"""
