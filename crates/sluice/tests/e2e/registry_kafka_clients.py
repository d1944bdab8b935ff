"""Confluent's own Python serializers on both ends of a Sluice pipeline (registry_kafka.rs).

Usage:
  python registry_kafka_clients.py produce REGISTRY_URL API_TOKEN
      Serializes the test's orders with AvroSerializer (schema v1, then v2 with a field added)
      and JSONSerializer, registering their schemas, and prints one JSON object per payload:
      {"topic": ..., "hex": ...}.
  python registry_kafka_clients.py consume REGISTRY_URL API_TOKEN < payloads
      Reads {"topic": ..., "hex": ...} lines (what the pipeline wrote), deserializes each with
      AvroDeserializer or JSONDeserializer (writer schema fetched by the id in the payload; JSON
      payloads validated against it) and prints {"topic": ..., "schema_id": ..., "value": ...}.

The orders are order(i) below; the Rust test computes the same ones on its own. Any exception
ends the script with a non-zero status and its traceback on stderr.
"""

import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
}
# v1 with an optional field: BACKWARD compatible, so the registry takes it as version 2.
ORDER_V2 = {**ORDER_V1, "fields": ORDER_V1["fields"] + [{"name": "note", "type": ["null", "string"], "default": None}]}
ORDER_JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "customer": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["id", "customer", "amount"],
}
V1_ORDERS = range(0, 300)
V2_ORDERS = range(300, 500)
JSON_ORDERS = range(0, 300)


def order(i, with_note):
    value = {"id": i, "customer": f"c{i % 13}", "amount": (i % 50) * 1.5}
    if with_note:
        value["note"] = f"n{i}" if i % 3 == 0 else None
    return value


def produce(client):
    # The client's defaults: auto-registration under the topic-name strategy (`<topic>-value`).
    context = SerializationContext("orders", MessageField.VALUE)
    for schema, orders, with_note in [(ORDER_V1, V1_ORDERS, False), (ORDER_V2, V2_ORDERS, True)]:
        serialize = AvroSerializer(client, json.dumps(schema))
        for i in orders:
            print(json.dumps({"topic": "orders", "hex": serialize(order(i, with_note), context).hex()}))
    context = SerializationContext("orders-json", MessageField.VALUE)
    serialize = JSONSerializer(json.dumps(ORDER_JSON), client)
    for i in JSON_ORDERS:
        print(json.dumps({"topic": "orders-json", "hex": serialize(order(i, False), context).hex()}))


def consume(client):
    avro = AvroDeserializer(client)
    json_schema = JSONDeserializer(None, schema_registry_client=client)
    for line in sys.stdin:
        line = json.loads(line)
        payload = bytes.fromhex(line["hex"])
        context = SerializationContext(line["topic"], MessageField.VALUE)
        deserialize = json_schema if line["topic"].endswith("-json") else avro
        value = deserialize(payload, context)
        schema_id = int.from_bytes(payload[1:5], "big")
        print(json.dumps({"topic": line["topic"], "schema_id": schema_id, "value": value}))


def main():
    command, url, token = sys.argv[1:4]
    client = SchemaRegistryClient({"url": url, "basic.auth.user.info": f"sluice:{token}"})
    {"produce": produce, "consume": consume}[command](client)


if __name__ == "__main__":
    main()
