"""Confluent's own Python client against Sluice's built-in schema registry.

Usage: python schema_registry_client.py REGISTRY_URL API_TOKEN

Drives SchemaRegistryClient, AvroSerializer/AvroDeserializer and JSONSerializer/JSONDeserializer
unchanged (HTTP Basic with the API token as password) and prints one JSON object per line,
{"step": ..., ...}; the Rust test (schema_registry.rs) checks them. Any exception ends the
script with a non-zero status and its traceback on stderr.
"""

import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def out(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def refused(register):
    """Calls register() and returns what the SchemaRegistryError says (it must be raised)."""
    try:
        register()
    except SchemaRegistryError as error:
        return {"http_status": error.http_status_code, "error_code": error.error_code, "message": error.error_message}
    raise AssertionError("the registry accepted an incompatible schema")


ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "item", "type": "string"},
        {"name": "qty", "type": "int"},
    ],
}
ORDER_V2 = dict(ORDER_V1, fields=ORDER_V1["fields"] + [{"name": "note", "type": ["null", "string"], "default": None}])
ORDER_BAD = dict(ORDER_V2, fields=ORDER_V2["fields"] + [{"name": "price", "type": "double"}])

EVENT_V1 = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["name"],
    "additionalProperties": False,
}
EVENT_V2 = dict(EVENT_V1, properties=dict(EVENT_V1["properties"], tag={"type": "string"}))
EVENT_BAD = dict(EVENT_V1, required=["name", "count"])


def main():
    url, token = sys.argv[1], sys.argv[2]

    def fresh():
        """A new client: the client caches get_latest_version answers."""
        return SchemaRegistryClient({"url": url, "basic.auth.user.info": f"x:{token}"})

    client = fresh()
    out("types", types=client.get_schema_types())

    # Avro: AvroSerializer registers orders-value itself (auto.register.schemas is on by default).
    context = SerializationContext("orders", MessageField.VALUE)
    serializer = AvroSerializer(client, json.dumps(ORDER_V1))
    records = [{"id": 1, "item": "apple", "qty": 3}, {"id": 2, "item": "pear", "qty": -1}, {"id": 300, "item": "", "qty": 0}]
    frames = [serializer(record, context) for record in records]
    out("avro_frame", hex=frames[0].hex(), record=records[0])
    deserializer = AvroDeserializer(client)
    out("avro_roundtrip", sent=records, received=[deserializer(frame, context) for frame in frames])
    v1 = client.get_latest_version("orders-value")
    out("avro_v1", id=v1.schema_id, version=v1.version)

    v2_id = client.register_schema("orders-value", Schema(json.dumps(ORDER_V2), "AVRO"))
    v2 = fresh().get_latest_version("orders-value")
    out("avro_v2", id=v2_id, latest_id=v2.schema_id, version=v2.version, versions=client.get_versions("orders-value"))
    # A reader on the new schema reads data written with the old one: the new field takes its default.
    evolved = AvroDeserializer(client, json.dumps(ORDER_V2))
    out("avro_evolved_read", received=evolved(frames[0], context))
    again = client.register_schema("orders-value", Schema(json.dumps(ORDER_V2), "AVRO"))
    out("avro_idempotent", id=again)
    out("avro_incompatible", **refused(lambda: client.register_schema("orders-value", Schema(json.dumps(ORDER_BAD), "AVRO"))))

    out("set_compatibility", answer=client.set_compatibility("orders-value", "FULL"))
    out("get_compatibility", level=client.get_compatibility("orders-value"))
    out("test_compatibility", compatible=client.test_compatibility("orders-value", Schema(json.dumps(ORDER_V1), "AVRO")))

    # JSON Schema: the same round trip.
    json_context = SerializationContext("events", MessageField.VALUE)
    json_serializer = JSONSerializer(json.dumps(EVENT_V1), client)
    events = [{"name": "a", "count": 1}, {"name": "b"}]
    json_frames = [json_serializer(event, json_context) for event in events]
    json_deserializer = JSONDeserializer(None, schema_registry_client=client)
    out("json_roundtrip", sent=events, received=[json_deserializer(frame, json_context) for frame in json_frames])
    latest = client.get_latest_version("events-value")
    out("json_v1", id=latest.schema_id, version=latest.version, schema_type=latest.schema.schema_type)
    json_v2 = client.register_schema("events-value", Schema(json.dumps(EVENT_V2), "JSON"))
    out("json_v2", id=json_v2, version=fresh().get_latest_version("events-value").version)
    out("json_incompatible", **refused(lambda: client.register_schema("events-value", Schema(json.dumps(EVENT_BAD), "JSON"))))
    out("subjects", subjects=client.get_subjects())
    out("done")


if __name__ == "__main__":
    main()
