"""advbook: the helper library behind the adversarial-vulnerability companion book.

Modules are grouped by concept: ``data``, ``models``, ``attacks``, ``evaluation``,
``train``, ``cache``, ``zoo`` (trained models shared between chapters), ``params``,
``results`` (provenance and claims), ``plots``, ``runner`` and ``methods`` (one module
per paper).
"""

__version__ = "0.1.0"
