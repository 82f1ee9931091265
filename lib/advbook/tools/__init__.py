"""Developer tools, not used by the book or its chapters: ``bench`` (throughput figures, ``make bench``)."""
