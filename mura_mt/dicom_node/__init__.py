"""The DICOM triage node: PACS routes studies to it, it answers in the same study (issue "DICOM triage node").

Split by concern, as MONAI Deploy splits its operators; each module is small, testable alone, imports no Gradio, and
the Predictor imports none of them:

- ``database``: SQLite (embedded, the default) or PostgreSQL (shared by several nodes) behind one interface.
- ``store``: the worklist store: one row per study, per received instance and per node's copy of it; the claims that
  keep two nodes from analysing one study; the worklist order the app shows.
- ``receive``: the Storage SCP (pynetdicom): C-ECHO, C-STORE of image storage classes in the usual transfer
  syntaxes, each instance written durably BEFORE the success status goes back; allow-list, timeouts, association
  limit, disk budget.
- ``studies``: a study is answered once quiet, with ``Predictor.predict_study``; ``outputs``: its Secondary
  Captures; ``sr``: its TID 1500 Measurement Report (built, and read back with highdicom); ``delivery``:
  C-STORE/STOW-RS with retries; ``loop``: the background passes they run in; ``tls``: DICOM TLS both ways.
- ``node``: the whole node assembled.

What comes back about its answers (labels, HL7, monitoring, the export for fine-tuning) lives in ``mura_mt.site``.

May import ``inference``, ``imaging`` and the shared root modules; never ``web`` or ``training``.
"""
