"""``rtp demo``: ``run`` chains simulate → train → stream → serve; ``shifts`` picks
the split and the users from the simulator's truth; ``streaming_feed`` feeds each
part through the Pub/Sub emulator and the streaming job."""
