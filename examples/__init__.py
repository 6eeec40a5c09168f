"""The demo system's old home: it ships with the observer now (:mod:`observer.demo`).

These modules re-export :mod:`observer.demo.system`, :mod:`observer.demo.node`
and :mod:`observer.demo.payments` under their old names; see ``examples/README.md``.
"""
