"""The engagement simulator (``rtp simulate``): a deterministic short-video stream
with its ground truth, written to files and/or published to Pub/Sub.

- ``config``: ``SimulatorConfig``, the dirty kinds and the reason each must get;
- ``records``: ``SimRecord`` (one output line), ``ItemInfo``, ``InterestShift``;
- ``randomness``, ``catalogue``, ``behaviour``: the seeded world (items and their
  popularity; users, their interests and sessions);
- ``encoding``, ``dirty_lines``: events as contract lines, and the labelled dirt;
- ``simulation``: ``simulate(config)``, the stream in event-time order;
- ``writer``: the JSONL and its sidecars; ``publish``: Pub/Sub at a target rate;
- ``closed_loop``, ``service_client``: ``rtp simulate --closed-loop``, the same users
  asking a running service and reacting to what it shows;
- ``cli``: ``rtp simulate``.
"""
