#!/usr/bin/python3
"""A standard gRPC client (Debian's python3-grpcio) driving the agent's outgoing-migration API.

Usage:

  migration_client.py GEN_DIR ADDRESS AGENT_CERT_PEM CERT_PEM KEY_PEM COMMAND [ARGS...]

  start PID TARGET [OPTIONS_JSON]   StartMigration; prints {"migration_id": ...}
  watch ID                          WatchMigration; prints one line per event as it arrives:
                                    {"recv": UNIX_SECONDS, "event": {...}}, then {"end": "ok"} when the stream ends
  get ID                            GetOutgoingMigration
  cancel ID                         CancelMigration
  list                              ListMigrations

GEN_DIR holds agent_pb2.py (protoc --python_out from proto/migrate/v1/agent.proto); the credentials are as for
agent_client.py. A failed call prints {"code": STATUS_NAME, "details": ...}. Every message is printed in protobuf's
JSON form with the proto's field names and every field (defaults included).
"""
import json
import sys
import time

import grpc

sys.path.insert(0, sys.argv[1])
from google.protobuf import json_format  # noqa: E402
from migrate.v1 import agent_pb2  # noqa: E402

address, agent_cert_path, cert_path, key_path, command = sys.argv[2:7]
args = sys.argv[7:]
creds = grpc.ssl_channel_credentials(
    root_certificates=open(agent_cert_path, "rb").read(),
    private_key=open(key_path, "rb").read(),
    certificate_chain=open(cert_path, "rb").read(),
)
channel = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "migrate-agent")])


def as_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def emit(obj):
    print(json.dumps(obj), flush=True)


def unary(name, req_type, resp_type):
    return channel.unary_unary(
        "/migrate.v1.Agent/" + name, request_serializer=req_type.SerializeToString, response_deserializer=resp_type.FromString
    )


try:
    if command == "start":
        options = agent_pb2.MigrationOptions()
        if len(args) > 2:
            json_format.ParseDict(json.loads(args[2]), options)
        call = unary("StartMigration", agent_pb2.StartMigrationRequest, agent_pb2.StartMigrationReply)
        emit(as_dict(call(agent_pb2.StartMigrationRequest(pid=int(args[0]), target=args[1], options=options), timeout=30)))
    elif command == "watch":
        watch = channel.unary_stream(
            "/migrate.v1.Agent/WatchMigration",
            request_serializer=agent_pb2.WatchMigrationRequest.SerializeToString,
            response_deserializer=agent_pb2.MigrationEvent.FromString,
        )
        for event in watch(agent_pb2.WatchMigrationRequest(migration_id=args[0]), timeout=300):
            emit({"recv": time.time(), "event": as_dict(event)})
        emit({"end": "ok"})
    elif command == "get":
        call = unary("GetOutgoingMigration", agent_pb2.GetOutgoingMigrationRequest, agent_pb2.OutgoingMigrationInfo)
        emit(as_dict(call(agent_pb2.GetOutgoingMigrationRequest(migration_id=args[0]), timeout=30)))
    elif command == "cancel":
        call = unary("CancelMigration", agent_pb2.CancelMigrationRequest, agent_pb2.CancelMigrationReply)
        emit(as_dict(call(agent_pb2.CancelMigrationRequest(migration_id=args[0], reason="python says stop"), timeout=120)))
    elif command == "list":
        call = unary("ListMigrations", agent_pb2.ListMigrationsRequest, agent_pb2.ListMigrationsReply)
        emit(as_dict(call(agent_pb2.ListMigrationsRequest(), timeout=30)))
    else:
        emit({"code": "USAGE", "details": "unknown command " + command})
        sys.exit(2)
except grpc.RpcError as e:
    emit({"code": e.code().name, "details": e.details()})
