"""The engagement simulator (``rtp simulate``): a deterministic short-video stream
with its ground truth, written to files and/or published to Pub/Sub."""
