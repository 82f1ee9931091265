"""advbook: the helper library behind the adversarial-vulnerability companion book.

Two layers, and imports go one way (``tests/test_layers.py``):

- the science library, this package: ``data``, ``models``, ``attacks``, ``train``, ``evaluation``,
  ``stats``, ``plots``, ``cache`` (with ``codehash``), ``zoo`` (trained models shared between
  chapters), ``profiles`` and ``params`` (what a run may be asked), ``protocol`` and ``results``
  (graded claims and provenance), ``paths`` (where everything lives) and ``methods`` (one module
  per paper); ``calibration`` measures the quick profile's AutoAttack budget;
- the book machinery, :mod:`advbook.book`: the set-up of a chapter's page (``chapter``), the
  runner (``build``, ``execute``, ``finish``, ``records``, ``site``), the execution cache
  (``buildcache``), the reproducibility page (``report``), ``pages``, ``scaffold``, ``colab``,
  ``student``, ``teaching``, ``cachepack``, ``cluster``, ``sitecheck``, ``sphinxext``, ``notebooks_strip``
  and the ``advbook`` command (``cli``). It imports the science library; the science library never
  imports it.

Developer tools live in :mod:`advbook.tools` (``bench``).
"""

__version__ = "0.1.0"
