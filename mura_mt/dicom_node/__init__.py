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
- ``labels``: the site's ground truth (the reader, the RIS, a file) in the store's tables, with its history;
  ``hl7_listener``: the RIS's final reports over MLLP; ``monitoring``: Prometheus ``/metrics`` and the drift monitor.
- ``node``: the whole node assembled, and the site services (``start_site``) the app runs beside its worklist.

May import ``inference``, ``imaging``, ``evaluation`` (the site's figures and drift statistics), ``access`` (the
monitor users of /metrics) and the shared root modules; never ``web`` or ``training``.
"""
