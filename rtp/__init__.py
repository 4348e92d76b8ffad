"""The application layer: the ``rtp`` command line, the demo, the simulator and
the launching of local servers; the one place that chains the jobs of
``beam_pipelines``, ``models`` and ``serving`` (see the README's *Layout*)."""
