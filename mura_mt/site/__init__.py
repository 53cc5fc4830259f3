"""The site's own evidence (issues "is it right here?" and "operating points"): what comes back from the hospital
about the node's answers, and what the hospital watches. The node answers studies (``dicom_node``); this room keeps
what is learnt about those answers:

- ``labels``: the site's ground truth (the reader, the RIS, a file) in the worklist store's tables, with its history.
- ``hl7_listener``: the RIS's final reports over MLLP (over TLS with ``--hl7-tls``).
- ``monitoring``: Prometheus ``/metrics`` and the drift monitor.
- ``export``: the labelled studies as PNGs and keyed hashes, for fine-tuning at the site.
- ``window``: the times people give (``since``, ``until``) and the ISO 8601 times written back.
- ``services``: the store, the audit trail, the node and the services above, started together (``start_site``) by
  ``app.py`` and ``scripts/dicom_node.py``.

May import ``dicom_node`` (the store it reads, the node it starts), ``evaluation`` (the site's figures and drift
statistics), ``access`` (the monitor users of /metrics), ``inference`` and the shared root modules; never ``web``.
"""
