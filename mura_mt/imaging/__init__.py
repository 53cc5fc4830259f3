"""Imaging: a file becomes the image the model sees. Safe decoding of PNG, JPEG and DICOM into one grayscale
picture (``io``, ``dicom``, and the limits and pixel helpers both share in ``pixels``), and THE serving transform
(``preprocessing``: letterbox, normalise, map a heatmap back). Imports nothing else from the package: no models,
no Gradio, no DICOM networking.
"""
