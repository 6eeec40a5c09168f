"""A Chaos Toolkit extension: actions and probes on a node observed through its agent.

Use ``observer.chaostoolkit.actions`` (``kill_process``, ``kill_random``) and
``observer.chaostoolkit.probes`` (``tree_alive``, ``supervisor_gave_up``,
``process_count``...) as ``type: python`` providers in a chaostoolkit
experiment. See ``docs/chaos.md``.
"""
