"""Everything that speaks Triton's protocol: the only package importing tritonclient's client.

    codecs      the model contracts: frames to inputs, answers to Detections
    shm         system shared-memory regions on this host (names, owners, the per-request pool)
    transports  how a request's input travels: gRPC tensors, or shared memory
    errors      tritonclient's errors mapped once (`translate`) to typed exceptions
    client      TritonClient (health, contract, transport, infer) and its StreamSession
    stream      InferenceStream: one server's ordered, resending stream (explicit phases)
    targets     --triton parsed and resolved; loopback addresses
    pool        ServerPool: several servers as one Inference
"""

from ..frames import Outcome
from .client import Reply, StreamSession, TritonClient
from .codecs import OutputCheck, PaddedCodec, SeedCodec, codec_for, parse_outputs, to_input
from .errors import (ModelNotServed, RegionAlreadyRegistered, RegionInUse, RequestFailed, ServerUnreachable,
                     ShmRefused, ShmUnavailable, StreamBroken, TritonFailure)
from .pool import PoolStats, ServerPool, ServerStatus
from .stream import IDLE, IDLE_WAIT, InferenceStream, Phase, ReorderBuffer
from .targets import Target, is_loopback, parse_targets, resolve, split_host_port
from .transports import GrpcTransport, ShmTransport

__all__ = [
    "IDLE", "IDLE_WAIT", "GrpcTransport", "InferenceStream", "ModelNotServed", "Outcome", "OutputCheck",
    "PaddedCodec", "Phase",
    "PoolStats", "RegionAlreadyRegistered", "RegionInUse", "Reply", "ReorderBuffer", "RequestFailed", "SeedCodec",
    "ServerPool", "ServerStatus", "ServerUnreachable", "ShmRefused", "ShmTransport", "ShmUnavailable",
    "StreamBroken", "StreamSession", "Target", "TritonClient", "TritonFailure", "codec_for", "is_loopback",
    "parse_outputs", "parse_targets", "resolve", "split_host_port", "to_input",
]
