"""Example systems built on :mod:`actors`: see ``examples/README.md``.

``python -m examples.payments`` runs the demo system of :mod:`examples.demo_system`.
"""
