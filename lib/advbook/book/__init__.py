"""The book machinery: everything that turns the science library (:mod:`advbook`) into the book.

- ``chapter``: the set-up cell of a chapter's page (parameters validated, results opened, rerun box,
  glue and figures), the one module a chapter's kernel imports from here;
- the runner, one job per module: ``build`` (``advbook run``: select, plan, schedule, the worker pool),
  ``execute`` (one notebook through papermill, with progress lines), ``finish`` (what a page gets
  after it ran), ``records`` (the runner's entries in the results JSONs), ``site`` (``jupyter-book build``);
- ``buildcache`` (the chapter execution cache), ``report`` (the reproducibility page), ``pages``
  (which cells a page shows), ``colab``, ``scaffold`` (``advbook new``), ``student`` (the student
  edition), ``teaching``, ``cachepack`` (a warmed cache for a class), ``cluster`` (SLURM),
  ``sitecheck`` (the built site in a browser), ``sphinxext``, ``notebooks_strip`` (``make strip``)
  and ``cli`` (the ``advbook`` command).

The science library never imports this package (``tests/test_layers.py``), and none of it enters
the key of a cached computation (:data:`advbook.codehash.NEUTRAL_PACKAGES`).
"""
