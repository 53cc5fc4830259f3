"""Inference: the one path from an image to an answer. The ``Predictor``, the model ``runners`` (PyTorch or ONNX
Runtime) and the ``onnx_graph`` they run, int8 ``quantize``, Grad-CAM (``explain``), the "unlike the training
images" score (``ood``), THE decision rule and calibration, ``operating_points`` with a guarantee, ``bulk``
prediction over files, and the checkpoint
format (``checkpoint``, ``serving``). May import ``imaging``, ``model`` and the shared root modules; never
``training``, ``evaluation``, ``data``, ``dicom_node``, ``web`` or ``bench``, nor Accelerate.
"""
