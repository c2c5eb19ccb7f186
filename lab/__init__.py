"""The local lab: lab.py (boots it), inventory.py (pyinfra's view of it), settings.py (the lab's and tests' knobs)."""
