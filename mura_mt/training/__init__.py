"""Training under Accelerate: the ``loop`` (``fit``, ``train_one_epoch``), the multi-task ``losses``, resumable
``state`` and the ``release`` of the best epoch (fitting calibration and thresholds, then export). May import
``data``, ``inference`` (the checkpoint format, the decision rule) and ``evaluation.metrics``; nothing imports it
but ``scripts/`` and ``bench``.
"""
