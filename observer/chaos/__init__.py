"""Chaos experiments on a live supervision tree (see ``docs/chaos.md``).

An experiment kills processes of an attached node through its agent (the
``kill`` command) by a policy, while a steady-state hypothesis is checked
before, during and after; everything goes into a journal (JSON, and the
observer's SQLite history).
"""
