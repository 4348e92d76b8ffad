"""The entity key our stores' ``ping`` reads: no feature row ever has it."""

from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

PING_KEY = EntityKey(join_keys=["rtp_ping"], entity_values=[Value(string_val="ping")])
