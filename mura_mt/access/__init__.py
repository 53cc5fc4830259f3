"""Who may do what (issue "who may see which patient"): framework-free, so the web app, the node's ``/metrics`` and
the command line share one implementation.

- ``roles``: the roles and what each may do: one table, the one README shows.
- ``users``: the users file (Argon2id or ``htpasswd -B`` bcrypt hashes, roles, disabled accounts) and the plain
  ``MURA_MT_AUTH`` list kept for loopback demos.
- ``throttle``: failed logins per user and per address, and the growing lock-outs that follow.
- ``sessions``: the login sessions a browser or a client holds, ended when idle, at logout and at restart.
- ``proxy``: the hospital's single sign-on: a trusted reverse proxy names the user and the groups in headers.
- ``gate``: the four together: who a request is (``Identity``), and a login attempt's outcome.

Imports only the shared ``audit``; knows nothing of Gradio, FastAPI or DICOM.
"""
