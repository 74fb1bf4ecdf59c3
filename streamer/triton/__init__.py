"""Everything that speaks Triton's protocol: the only package importing tritonclient's client."""

from .client import TritonClient
from .codecs import PaddedCodec, SeedCodec, codec_for, parse_outputs, to_input
from .errors import ShmUnavailable
from .pool import ServerPool, Target, parse_targets, resolve, split_host_port
from .stream import IDLE, IDLE_WAIT, InferenceStream, ReorderBuffer
from .transports import TRANSPORTS, GrpcTransport, ShmTransport, is_loopback
from ..frames import Outcome

__all__ = [
    "IDLE", "IDLE_WAIT", "TRANSPORTS", "GrpcTransport", "InferenceStream", "Outcome", "PaddedCodec", "ReorderBuffer",
    "SeedCodec", "ServerPool", "ShmTransport", "ShmUnavailable", "Target", "TritonClient", "codec_for",
    "is_loopback", "parse_outputs", "parse_targets", "resolve", "split_host_port", "to_input",
]
