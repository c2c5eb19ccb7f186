"""Galaxy, split along its concerns (deploy.py calls the `@deploy`s of account.py, venv.py and config.py,
in this order; keys.py serves config.py):

- account.py: the galaxy account on every host and the shared directory (NFS or existing)
- venv.py: Galaxy's venv (built ahead on a first install), and the deploy's own venv (uv, bioblend)
- keys.py: Galaxy's secrets, and the admin's and verification user's own API keys
- config.py: galaxy.yml, job_conf.xml, supervisor, checked restarts, readiness
"""
