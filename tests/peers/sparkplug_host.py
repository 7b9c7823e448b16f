"""A Sparkplug B host application for Twinloom's Sparkplug tests: pysparkplug decodes every
payload (its own protobuf code, independent of Twinloom's), paho-mqtt (pysparkplug's MQTT
client) talks to the broker.

Usage: sparkplug_host.py <port> <group_id> <edge_node_id>

Subscribes `spBv1.0/#` and prints one JSON line per message received:
  {"topic", "type", "device", "seq", "timestamp", "bd_seq", "qos", "retain",
   "metrics": [{"name", "alias", "datatype", "value", "is_null", "is_historical",
                "timestamp", "properties": {key: value}}]}
Names of aliased metrics are resolved from the last birth (pysparkplug raises on an unknown
alias: printed as {"error": ...}). It checks what a host must: `seq` one more than the last
message of the node (mod 256), 0 in NBIRTH; NBIRTH's bdSeq equal to the Will's (the NDEATH that
follows); every violation is a line {"error": "..."}.

Commands on stdin, one JSON object per line:
  {"rebirth": true}                          NCMD Node Control/Rebirth = true
  {"ncmd": {"name": ..., "value": ...}}      NCMD of a Boolean metric
  {"dcmd": {"device": ..., "name": ..., "datatype": "DOUBLE", "value": ...}}
  {"state": {"host": ..., "online": bool, "timestamp": int}}   retained STATE, QoS 1
Prints {"started": true} before it connects and {"ready": true} once subscribed. Exits when stdin closes.
"""

import json
import sys
import threading
import time

import pysparkplug as sp
from paho.mqtt import client as paho_mqtt
from pysparkplug._protobuf import sparkplug_b_pb2 as pb

port, group, edge = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
births = {}
last_seq = {"value": None}


def out(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def property_value(value):
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


def raw_properties(raw):
    """Metric properties by metric index (pysparkplug's Metric does not carry them)."""
    payload = pb.Payload.FromString(raw)
    result = []
    for metric in payload.metrics:
        props = {}
        if metric.HasField("properties"):
            for key, value in zip(metric.properties.keys, metric.properties.values):
                props[key] = {"type": value.type, "value": property_value(value)}
        result.append(props)
    return result


def on_message(client, userdata, msg):
    try:
        topic = sp.Topic.from_str(msg.topic)
    except Exception as error:  # noqa: BLE001
        out({"error": f"bad topic {msg.topic}: {error}"})
        return
    kind = str(topic.message_type.value) if topic.message_type else None
    line = {
        "topic": msg.topic,
        "type": kind,
        "device": topic.device_id,
        "qos": msg.qos,
        "retain": bool(msg.retain),
    }
    if kind == "STATE":
        line["state"] = json.loads(msg.payload)
        out(line)
        return
    key = (topic.group_id, topic.edge_node_id, topic.device_id)
    try:
        message = sp.Message.from_mqtt_message(msg, birth=births.get(key))
    except Exception as error:  # noqa: BLE001
        out({"error": f"{kind} on {msg.topic} does not decode: {error!r}"})
        return
    payload = message.payload
    if isinstance(payload, sp.NBirth):
        births.clear()
    if isinstance(payload, (sp.NBirth, sp.DBirth)):
        births[key] = payload
    line["timestamp"] = getattr(payload, "timestamp", None)
    seq = getattr(payload, "seq", None)
    line["seq"] = seq
    if kind == "NDEATH":
        line["bd_seq"] = payload.bd_seq_metric.value
        line["seq"] = None
        out(line)
        return
    if kind in ("NCMD", "DCMD"):
        out(line)
        return
    previous = last_seq["value"]
    if kind == "NBIRTH":
        if seq != 0:
            out({"error": f"NBIRTH seq {seq}, not 0"})
    elif previous is None:
        out({"error": f"{kind} before any NBIRTH"})
    elif seq != (previous + 1) % 256:
        out({"error": f"{kind} seq {seq} after {previous}"})
    last_seq["value"] = seq
    props = raw_properties(msg.payload) if kind != "DDEATH" else []
    metrics = []
    for i, metric in enumerate(getattr(payload, "metrics", ())):
        if metric.name == "bdSeq":
            line["bd_seq"] = metric.value
        value = metric.value
        if isinstance(value, bytes):
            value = value.hex()
        metrics.append(
            {
                "name": metric.name,
                "alias": metric.alias,
                "datatype": metric.datatype.name,
                "value": value,
                "is_null": metric.is_null,
                "is_historical": metric.is_historical,
                "timestamp": metric.timestamp,
                "properties": props[i] if i < len(props) else {},
            }
        )
    line["metrics"] = metrics
    out(line)


def on_subscribe(client, userdata, mid, granted):
    out({"ready": True})


def command(client, cmd):
    now = sp.get_current_timestamp()
    if "rebirth" in cmd or "ncmd" in cmd:
        name, value = ("Node Control/Rebirth", True)
        if "ncmd" in cmd:
            name, value = cmd["ncmd"]["name"], cmd["ncmd"]["value"]
        payload = sp.NCmd(
            timestamp=now,
            metrics=(sp.Metric(timestamp=now, name=name, datatype=sp.DataType.BOOLEAN, value=value),),
        )
        client.publish(f"spBv1.0/{group}/NCMD/{edge}", payload.encode(include_dtypes=True), qos=0)
    elif "dcmd" in cmd:
        d = cmd["dcmd"]
        payload = sp.DCmd(
            timestamp=now,
            metrics=(
                sp.Metric(
                    timestamp=now,
                    name=d["name"],
                    datatype=sp.DataType[d["datatype"]],
                    value=d["value"],
                ),
            ),
        )
        client.publish(
            f"spBv1.0/{group}/DCMD/{edge}/{d['device']}", payload.encode(include_dtypes=True), qos=0
        )
    elif "state" in cmd:
        s = cmd["state"]
        state = sp.State(timestamp=s["timestamp"], online=s["online"])
        info = client.publish(f"spBv1.0/STATE/{s['host']}", state.encode(), qos=1, retain=True)
        info.wait_for_publish(5)
    out({"sent": list(cmd.keys())[0]})


def main():
    client = paho_mqtt.Client(client_id=f"twinloom-test-host-{port}", clean_session=True)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, u, f, rc: c.subscribe("spBv1.0/#", qos=1)
    # The broker may not be up yet (a test restarting it starts the host first, so the host
    # subscribes before the edge node, whose reconnects back off, births): try every 20 ms.
    out({"started": True})
    deadline = time.monotonic() + 15
    while True:
        try:
            client.connect("127.0.0.1", port, keepalive=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    client.loop_start()
    for line in sys.stdin:
        line = line.strip()
        if line:
            command(client, json.loads(line))
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
