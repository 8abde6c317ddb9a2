#!/usr/bin/python3
"""A standard gRPC client (Debian's python3-grpcio) driving migrate-agent's control API.

Nobody here wrote this client library: it proves the agent (Grpc.AspNetCore) speaks standard gRPC over
HTTP/2 with TLS. Usage:

  agent_client.py GEN_DIR ADDRESS AGENT_CERT_PEM CERT_PEM KEY_PEM

GEN_DIR holds agent_pb2.py (protoc --python_out from proto/migrate/v1/agent.proto). AGENT_CERT_PEM is the
certificate the agent serves (it writes it to WORK_DIR/agent-cert.pem), the trust anchor; CERT_PEM/KEY_PEM
are the token-derived client credentials the agent requires.
Prints one JSON object with what each call returned.
"""
import json
import sys

import grpc

sys.path.insert(0, sys.argv[1])
from migrate.v1 import agent_pb2  # noqa: E402

address, agent_cert_path, cert_path, key_path = sys.argv[2:6]
agent_cert = open(agent_cert_path, "rb").read()
cert = open(cert_path, "rb").read()
key = open(key_path, "rb").read()
creds = grpc.ssl_channel_credentials(root_certificates=agent_cert, private_key=key, certificate_chain=cert)
channel = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "migrate-agent")])

out = {}


def unary(name, req_type, resp_type):
    return channel.unary_unary(
        "/migrate.v1.Agent/" + name,
        request_serializer=req_type.SerializeToString,
        response_deserializer=resp_type.FromString,
    )


try:
    preflight = unary("Preflight", agent_pb2.PreflightRequest, agent_pb2.PreflightReply)
    reply = preflight(
        agent_pb2.PreflightRequest(source_host="python", mode="cold", bytes_needed=4096, cpuinfo_image=b"not a cpuinfo image"),
        timeout=60,
    )
    out["preflight"] = {
        "ok": reply.ok,
        "hostname": reply.hostname,
        "criu": reply.target_criu.text,
        "checks": {c.name: c.ok for c in reply.checks},
    }
except grpc.RpcError as e:
    out["preflight_error"] = {"code": e.code().name, "details": e.details()}

try:
    get = unary("GetMigration", agent_pb2.GetMigrationRequest, agent_pb2.MigrationInfo)
    get(agent_pb2.GetMigrationRequest(migration_id="no-such-migration"), timeout=10)
    out["get"] = {"code": "OK"}
except grpc.RpcError as e:
    out["get"] = {"code": e.code().name, "details": e.details()}

try:
    put = unary("PutImage", agent_pb2.ImageChunk, agent_pb2.PutImageReply)
    put(agent_pb2.ImageChunk(migration_id="x", name="../../etc/passwd", data=b"x"), timeout=10)
    out["put"] = {"code": "OK"}
except grpc.RpcError as e:
    out["put"] = {"code": e.code().name, "details": e.details()}

try:
    nope = channel.unary_unary("/migrate.v1.Agent/NoSuchMethod", request_serializer=lambda x: x, response_deserializer=lambda x: x)
    nope(b"", timeout=10)
    out["unknown_method"] = {"code": "OK"}
except grpc.RpcError as e:
    out["unknown_method"] = {"code": e.code().name}

print(json.dumps(out))
