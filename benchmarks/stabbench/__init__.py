"""Detection benchmark: a labelled corpus (``corpus``), re-implemented production rules
(``baselines``), event-level scoring (``scoring``) and tables (``report``)."""
