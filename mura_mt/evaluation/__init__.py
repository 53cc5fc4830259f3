"""Evaluation: how good a checkpoint is, with intervals. ``evaluate`` runs a split through the Predictor,
``metrics`` (study-level kappa, AUROC, sensitivity, specificity), ``bootstrap`` intervals, the HTML/Markdown
``report``, the paired ``compare`` of two evaluations and its report, Grad-CAM ``faithfulness`` and the Hub
``model_card``; a site's own evidence (``site``: the same metrics on the answers the site labelled, and its
``site_report``), ``drift`` (the answers against the checkpoint's validation reference, without labels) and
``triage_report`` (the triage groups and operating curves); ``figures`` is the PNG plumbing all reports share.
May import ``inference``, ``imaging`` and the shared root modules; never ``training`` or ``web``.
"""
