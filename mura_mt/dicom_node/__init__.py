"""The DICOM triage node: PACS routes studies to it, it answers in the same study (issue "DICOM triage node").

Split by concern, as MONAI Deploy splits its operators; each module is small, testable alone, imports no Gradio, and
the Predictor imports none of them:

- ``store``: the worklist store (SQLite, WAL): one row per study and one per received instance. The node's memory.
- ``receive``: the Storage SCP (pynetdicom): C-ECHO, C-STORE of image storage classes in the usual transfer
  syntaxes, each instance written durably BEFORE the success status goes back; allow-list, timeouts, association
  limit, disk budget.

Still to come (the issue's later items): grouping by quiet period and analysis with ``Predictor.predict_study``,
the Secondary Capture and SR outputs, delivery by C-STORE/STOW-RS with retries, and ``scripts/dicom_node.py``.
"""
