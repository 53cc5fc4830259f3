"""The Gradio app's pieces, mounted by ``app.py``: the ``upload_tab`` (layout, handlers, /predict and
/predict_study), the ``worklist_tab`` and the ``worklist`` rows and HTML it shows, the ``performance_tab`` (/performance), the ``login`` (the login page and routes, the hospital's proxy, the
role checks the tabs ask), output
``pictures`` and ``zerogpu`` (Hugging Face Spaces). Callbacks map the library's results to widgets and never touch
tensors. May import ``inference``, ``imaging``, ``evaluation``, ``access`` and ``dicom_node`` (its store); nothing in the library imports it.
"""
