"""Everything that speaks Triton's protocol: the only module importing tritonclient's client.

- `TritonClient.check()` turns "is the server there, does it serve our model, does the
  model match the contract" into one clear error each.
- `InferenceStream.process(frames)` sends frames over one gRPC stream with a bounded
  number in flight (request id = frame index) and yields outcomes in frame order.
  Per-request errors carry no reliable id: when one arrives we stop sending until
  everything in flight has answered, and the requests left without a result are the
  failed ones. A transport error (server gone) ends the stream: we wait for the server
  (bounded), open a new stream and resend what was in flight. A live run instead fails
  what was in flight (stale by then), waits as long as it runs (`abort()` ends the
  wait), and its `state` tells the display whether inference is online.
"""

from __future__ import annotations

import functools
import ipaddress
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import contract, interrupts, shm
from .contract import ModelInfo
from .errors import InferenceError, ModelMismatch, ModelNotReady, ServerUnavailable
from .frames import Detections, Frame, Outcome
from .stages import ServerShare
from .states import InferenceState

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def to_input(image: np.ndarray) -> np.ndarray:
    """RGB uint8 H x W x 3 -> the seed contract's FP32 [3, H, W] in 0..1."""
    chw = image.transpose(2, 0, 1).astype(np.float32)
    chw *= np.float32(1.0 / 255.0)
    return chw


def parse_outputs(result) -> Detections:
    """Detections from a seed-model InferResult; ValueError when the shapes break the contract."""
    boxes = result.as_numpy(contract.OUTPUTS[0].name)
    labels = result.as_numpy(contract.OUTPUTS[1].name)
    scores = result.as_numpy(contract.OUTPUTS[2].name)
    if boxes is None or labels is None or scores is None:
        raise ValueError("response lacks one of output__0/1/2")
    if boxes.ndim != 2 or (boxes.size and boxes.shape[1] != 4):
        raise ValueError(f"output__0 has shape {boxes.shape}, expected [N, 4]")
    return Detections(boxes.reshape(-1, 4), labels, scores)


# -- model codecs: how frames become a model's input and its answer becomes Detections ----------


class SeedCodec:
    """The seed's `fasterrcnn`: FP32 [3, H, W] in 0..1; outputs of N rows."""

    input_name = contract.INPUT.name
    datatype = contract.INPUT.datatype
    output_names = tuple(spec.name for spec in contract.OUTPUTS)
    describe = "FP32 [3,H,W] frames, one per request"

    encode = staticmethod(to_input)
    decode = staticmethod(parse_outputs)

    @staticmethod
    def problems(config) -> List[str]:
        return contract.check_io(config, contract.SEED)


class PaddedCodec:
    """The batchable `fasterrcnn_u8`: UINT8 [1, H, W, 3] as decoded; K padded rows and a count."""

    input_name = contract.U8_INPUT.name
    datatype = contract.U8_INPUT.datatype
    output_names = tuple(spec.name for spec in contract.U8_OUTPUTS)
    describe = "UINT8 [H,W,3] frames, batched by Triton"

    @staticmethod
    def encode(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image, dtype=np.uint8)[None]

    @staticmethod
    def decode(result) -> Detections:
        boxes, labels, scores, count = (result.as_numpy(name) for name in PaddedCodec.output_names)
        if boxes is None or labels is None or scores is None or count is None:
            raise ValueError(f"response lacks one of {', '.join(PaddedCodec.output_names)}")
        if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
            raise ValueError(f"boxes__0 has shape {list(boxes.shape)}, expected [1, K, 4]")
        k = boxes.shape[1]
        if labels.shape != (1, k) or scores.shape != (1, k) or count.size != 1:
            raise ValueError(f"labels/scores/count have shapes {list(labels.shape)}/{list(scores.shape)}/"
                             f"{list(count.shape)}, expected [1, {k}]/[1, {k}]/[1, 1]")
        n = int(count.reshape(-1)[0])
        if not 0 <= n <= k:
            raise ValueError(f"count__3 is {n}, outside 0..{k}")
        return Detections(boxes[0, :n].copy(), labels[0, :n].copy(), scores[0, :n].copy())

    @staticmethod
    def problems(config) -> List[str]:
        return contract.check_io(config, contract.U8)


def codec_for(config):
    """The codec for a served model, from its config: a UINT8 input is the padded model."""
    if any(t.name == contract.U8_INPUT.name or contract.mc.DataType.Name(t.data_type) == "TYPE_UINT8"
           for t in config.input):
        return PaddedCodec
    return SeedCodec


# -- transports: how a request's input reaches the server ----------------------------------------

TRANSPORTS = ("auto", "grpc", "shm")


def is_loopback(url: str) -> bool:
    """True when HOST:PORT names this host (127.0.0.0/8, ::1, localhost)."""
    host = url.rpartition(":")[0].strip("[]") if ":" in url else url
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GrpcTransport:
    """Frames travel inside the gRPC message."""

    name = "grpc"
    describe = "gRPC (tensors in the message)"

    def set(self, key, tensor: grpcclient.InferInput, data: np.ndarray) -> None:
        tensor.set_data_from_numpy(data)

    def release(self, key) -> None:
        pass

    def reregister(self) -> None:
        pass

    def close(self) -> None:
        pass


class ShmTransport:
    """Frames travel through system shared-memory regions registered with the server.

    One region per request in flight: a request owns its slot until its answer arrives
    (a slot rewritten while its request waits would give that request another frame's
    boxes). Outputs stay in the gRPC answer.
    """

    name = "shm"
    describe = "system shared memory (frames in /dev/shm, answers over gRPC)"

    def __init__(self, grpc, timeout: float):
        self._grpc = grpc
        self._timeout = timeout
        self._server_gone = False
        self.pool = shm.RegionPool(self._register, self._unregister)

    def _register(self, slot: shm.Slot) -> None:
        self._grpc.register_system_shared_memory(slot.name, slot.key, slot.size, client_timeout=self._timeout)
        self._server_gone = False

    def _unregister(self, slot: shm.Slot) -> None:
        self._unregister_name(slot.name)

    def _unregister_name(self, name: str) -> bool:
        """Unregister a region; while requests queued on the server still read it ("in use"),
        retry for up to the timeout. False when it stays in use."""
        if self._server_gone:
            return False  # the regions go with the server; do not wait for each one
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._grpc.unregister_system_shared_memory(name, client_timeout=self._timeout)
                return True
            except InferenceServerException as err:
                if err.status() in _UNREACHABLE:
                    self._server_gone = True
                if "in use" not in str(err):
                    raise
                if time.monotonic() > deadline:
                    return False
            time.sleep(0.1)

    def remove_dead(self) -> List[str]:
        """Regions of clients that died: unlinked here, unregistered on the server.

        A dead client's requests may still be queued on the server, which then refuses to
        unregister their region ("in use"): retried for a while, else left to the next run."""
        gone = set(shm.remove_dead_files())
        status = self._grpc.get_system_shared_memory_status(client_timeout=self._timeout)
        for name in status.regions:
            if shm.dead_owner(name) and self._unregister_name(name):
                gone.add(name)
        return sorted(gone)

    def probe(self) -> None:
        """Create and register a first region: raises where the server or host refuses."""
        self.pool.acquire(_PROBE, 0)
        self.pool.release(_PROBE)

    def set(self, key, tensor: grpcclient.InferInput, data: np.ndarray) -> None:
        slot = self.pool.write(key, data)
        tensor.set_shared_memory(slot.name, data.nbytes)

    def release(self, key) -> None:
        self.pool.release(key)

    def reregister(self) -> None:
        """After a server restart: every region again, before anything is resent."""
        for slot in self.pool.slots:
            try:
                self._register(slot)
            except InferenceServerException as err:
                if "already" not in str(err):  # the same server after a broken stream still knows it
                    raise

    def close(self) -> None:
        self.pool.close()


_PROBE = object()


def _is_transport_error(error: InferenceServerException) -> bool:
    """On a stream: errors of one request come with only a message; a failure of the
    stream itself carries a gRPC status such as "StatusCode.UNAVAILABLE"."""
    return error.status() is not None


_ABORT = object()  # put on the event queue by abort()

# Yielded by a frame source that has nothing to send right now (a live scheduler whose
# cameras have no new frame, a server pool whose work is elsewhere): process() goes on
# releasing answers and asks again soon, instead of the source blocking with answers waiting.
IDLE = object()
IDLE_WAIT = 0.05  # seconds process() waits for answers before asking an idle source again

_UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


class ReorderBuffer:
    """Releases items in the order their keys were registered, whatever order they complete in."""

    def __init__(self):
        self._order: Deque[int] = deque()
        self._done: Dict[int, object] = {}

    def expect(self, key: int) -> None:
        self._order.append(key)

    def put(self, key: int, item) -> None:
        self._done[key] = item

    def has(self, key: int) -> bool:
        return key in self._done

    def ready(self) -> Iterator:
        """Pop the completed items at the head of the order."""
        while self._order and self._order[0] in self._done:
            yield self._done.pop(self._order.popleft())

    def __len__(self) -> int:
        """Keys registered and not yet released."""
        return len(self._order)


class ShmUnavailable(InferenceError):
    """--transport shm, and the host or server refuses system shared memory."""


class TritonClient:
    """One Triton server: health, the model and its contract, the transport, inference.

    `model`: a model name, or None to pick the lean path by itself (`fasterrcnn_u8` when the
    server has it ready, else the seed's `fasterrcnn`); settled by check(). `transport`:
    auto (shared memory when the server is on this host), grpc or shm; settled by check().
    Until then the client speaks the seed model over gRPC.
    """

    def __init__(self, url: str, model: Optional[str] = contract.MODEL_NAME, timeout: float = 10.0,
                 transport: str = "grpc", log: Log = _stderr):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.url = url
        self.requested_model = model
        self.model = model or contract.MODEL_NAME
        self.codec = SeedCodec
        self.timeout = timeout
        self.transport_mode = transport
        self.log = log
        self._client = grpcclient.InferenceServerClient(url)
        self._transport = GrpcTransport()

    @property
    def transport(self) -> str:
        """The transport in use: "grpc" or "shm"."""
        return self._transport.name

    def close(self) -> None:
        with interrupts.critical():  # a second Ctrl-C must not leave regions behind
            try:
                self._transport.close()
            finally:
                self._transport = GrpcTransport()
                try:
                    self._client.close()
                except Exception:  # closing a client whose channel already broke
                    pass

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- health and contract ---------------------------------------------------------------
    def ready(self) -> bool:
        try:
            return bool(
                self._client.is_server_ready(client_timeout=2)
                and self._client.is_model_ready(self.model, client_timeout=2)
            )
        except InferenceServerException:
            return False

    def check(self) -> ModelInfo:
        """Server live, model ready and matching the contract, transport set up; the model's description."""
        info = None
        for _, _, maybe_info in self.checks():
            info = maybe_info or info
        return info

    def checks(self) -> Iterator[Tuple[str, str, Optional[ModelInfo]]]:
        """Each health/contract check in turn: yields (what, detail, info-or-None) when it
        passes, raises the matching InferenceError when it fails."""
        try:
            self._client.is_server_live(client_timeout=self.timeout)
        except InferenceServerException as err:
            raise ServerUnavailable(
                f"no Triton server answers at {self.url} ({_short(err)}); start one with `streamer serve`, "
                "or leave out --triton to run the embedded server"
            ) from err
        yield "server live", self.url, None
        try:
            if not self._client.is_server_ready(client_timeout=self.timeout):
                raise ModelNotReady(
                    f"the server at {self.url} is live but not ready (models: {self._models_summary()})"
                )
            yield "server ready", "", None
            self.model = self._choose_model()
            yield "model ready", self.model, None
            config = self._client.get_model_config(self.model, client_timeout=self.timeout).config
        except InferenceServerException as err:
            raise ServerUnavailable(f"Triton at {self.url} failed to answer ({_short(err)})") from err
        self.codec = codec_for(config)
        problems = self.codec.problems(config)
        if problems:
            raise ModelMismatch(
                f"model '{self.model}' at {self.url} does not match the contract: {'; '.join(problems)}; "
                "re-export it with `streamer export-model`"
            )
        yield ("inputs/outputs match the contract",
               f"{config.backend or config.platform} backend, {self.codec.describe}", None)
        try:
            info = contract.model_info(contract.config_parameters(config))
        except ValueError as err:
            raise ModelMismatch(f"model '{self.model}' at {self.url}: {err}") from err
        yield "model metadata", info.describe(), info
        yield "transport", self._setup_transport(), None

    def _choose_model(self) -> str:
        wanted = [self.requested_model] if self.requested_model else list(contract.PREFERRED_MODELS)
        for name in wanted:
            if self._client.is_model_ready(name, client_timeout=self.timeout):
                return name
        names = " or ".join(f"'{n}'" for n in wanted)
        fix = ("pick one of them with --model" if self.requested_model
               else "export it with `streamer export-model` and restart the server")
        raise ModelNotReady(
            f"the server at {self.url} does not serve a ready model {names} (models: {self._models_summary()}); {fix}"
        )

    def _models_summary(self) -> str:
        index = self._client.get_model_repository_index(client_timeout=self.timeout)
        parts = []
        for m in index.models:
            state = m.state or "unloaded"
            parts.append(f"{m.name} {state}" + (f": {_squeeze(m.reason)}" if m.reason else ""))
        return "; ".join(parts) or "none"

    def _setup_transport(self) -> str:
        """Shared memory where asked (or, under auto, where the server is on this host); else gRPC."""
        self._transport.close()
        self._transport = GrpcTransport()
        if self.transport_mode == "grpc" or (self.transport_mode == "auto" and not is_loopback(self.url)):
            return self._transport.describe
        transport = ShmTransport(self._client, self.timeout)
        try:
            removed = transport.remove_dead()
            transport.probe()
        except (shm.RegionError, InferenceServerException) as err:
            transport.close()
            self._shm_failed(err)
            return self._transport.describe
        except BaseException:
            transport.close()
            raise
        self._transport = transport
        detail = transport.describe
        if removed:
            detail += f"; removed {len(removed)} region(s) left by clients that died"
        return detail

    def _shm_failed(self, err: Exception) -> None:
        """Shared memory refused: gRPC under auto (said once), an error under --transport shm."""
        if isinstance(err, InferenceServerException) and err.status() in _UNREACHABLE:
            raise err
        self._transport.close()
        self._transport = GrpcTransport()
        reason = _short(err)
        if self.transport_mode == "shm":
            raise ShmUnavailable(
                f"--transport shm: shared memory with Triton at {self.url} failed ({reason}); the server must run "
                "on this host (or share its IPC namespace) and allow client shared memory, or use --transport grpc"
            ) from err
        self.transport_mode = "grpc"
        self.log(f"WARNING: shared memory with Triton at {self.url} failed ({reason}); sending frames over gRPC")

    def _restore_transport(self) -> None:
        """After the server came back: regions registered again before anything is resent."""
        try:
            self._transport.reregister()
        except (shm.RegionError, InferenceServerException) as err:
            self._shm_failed(err)

    def compute_stats(self) -> Tuple[int, float]:
        """(inferences, compute seconds) the server counted for the model.

        From the batch statistics: one execution of a batch of n requests counts its time
        once and n inferences (the per-request sums would count its time n times).
        """
        try:
            stats = self._client.get_inference_statistics(self.model, client_timeout=self.timeout)
        except InferenceServerException:
            return 0, 0.0
        count, ns = 0, 0
        for s in stats.model_stats:
            if s.batch_stats:
                for b in s.batch_stats:
                    count += b.batch_size * b.compute_infer.count
                    ns += b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns
            else:
                count += s.inference_stats.success.count
                ns += (s.inference_stats.compute_input.ns + s.inference_stats.compute_infer.ns
                       + s.inference_stats.compute_output.ns)
        return count, ns / 1e9

    def batch_stats(self) -> Dict[int, int]:
        """Executions per batch size the server counted for the model."""
        try:
            stats = self._client.get_inference_statistics(self.model, client_timeout=self.timeout)
        except InferenceServerException:
            return {}
        executions: Dict[int, int] = {}
        for s in stats.model_stats:
            for b in s.batch_stats:
                executions[b.batch_size] = executions.get(b.batch_size, 0) + b.compute_infer.count
        return executions

    # -- inference ----------------------------------------------------------------------------
    def _inputs(self, image: np.ndarray, key) -> List[grpcclient.InferInput]:
        """The request's input for `image`; under shm it occupies `key`'s slot until _release(key)."""
        data = self.codec.encode(image)
        tensor = grpcclient.InferInput(self.codec.input_name, list(data.shape), self.codec.datatype)
        try:
            self._transport.set(key, tensor, data)
        except (shm.RegionError, InferenceServerException) as err:
            self._shm_failed(err)
            self._transport.set(key, tensor, data)
        return [tensor]

    def _release(self, key) -> None:
        self._transport.release(key)

    def _outputs(self) -> List[grpcclient.InferRequestedOutput]:
        return [grpcclient.InferRequestedOutput(name) for name in self.codec.output_names]

    def infer(self, image: np.ndarray, timeout: float = 300.0) -> Detections:
        """One image, one request (no stream)."""
        key = object()
        try:
            result = self._client.infer(
                self.model, self._inputs(image, key), outputs=self._outputs(), client_timeout=timeout
            )
        except InferenceServerException as err:
            if err.status() in _UNREACHABLE:
                raise ServerUnavailable(f"Triton at {self.url} failed during inference ({_short(err)})") from err
            raise InferenceError(f"inference failed on the server: {_short(err)}") from err
        finally:
            self._release(key)
        try:
            return self.codec.decode(result)
        except ValueError as err:
            raise ModelMismatch(f"model '{self.model}' answered outside the contract: {err}") from err


def _squeeze(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _short(err: Exception) -> str:
    text = str(err.message() if isinstance(err, InferenceServerException) else err)
    if "Traceback" in text:  # a TorchScript/Python traceback: its last line says what happened
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
    return _squeeze(text)


class InferenceStream:
    """Ordered, lossless streaming inference of a sequence of frames.

    recover(deadline) is called after the stream broke; it may restart a server it owns.
    The stream then waits until the server is ready again, at most `retry_timeout` seconds.
    """

    def __init__(
        self,
        client: TritonClient,
        max_in_flight: int = 2,
        retry_timeout: float = 60.0,
        request_timeout: float = 300.0,
        recover: Optional[Callable[[], None]] = None,
        log: Log = _stderr,
        resend: bool = True,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.client = client
        self.max_in_flight = max_in_flight
        self.retry_timeout = retry_timeout
        self.request_timeout = request_timeout
        self.recover = recover
        self.log = log
        self.resend = resend
        self.state = InferenceState.ONLINE  # OFFLINE while waiting for the server
        self.reconnects = 0
        self.resent = 0
        self.answered = 0  # frames the server answered with detections
        self._aborted = threading.Event()
        self._events: "queue.Queue[Tuple[int, object, Optional[InferenceServerException]]]" = queue.Queue()
        self._generation = 0
        self._streaming = False
        self._server_gone = False
        self._in_flight: Dict[int, Tuple[Frame, float]] = {}
        self._last_answer = time.monotonic()  # or the last send into an empty window

    def compute_stats(self) -> Tuple[int, float]:
        """The server's (inferences, compute seconds) so far."""
        return self.client.compute_stats()

    moved = 0  # one server: nothing is moved

    def servers(self) -> List[ServerShare]:
        return [ServerShare(self.client.url, self.answered)]

    def close(self) -> None:
        """The session owns the client: nothing to release here."""

    def abort(self) -> None:
        """From another thread: make process() return soon, dropping what is in flight."""
        self._aborted.set()
        self._events.put((self._generation, _ABORT, None))

    # -- the gRPC stream ------------------------------------------------------------------
    def _on_response(self, generation: int, result=None, error=None) -> None:
        # Called on tritonclient's thread with keywords result=, error=. Only enqueue.
        self._events.put((generation, result, error))

    def _open(self) -> None:
        self._last_answer = time.monotonic()
        self._generation += 1
        self.client._client.start_stream(callback=functools.partial(self._on_response, self._generation))
        self._streaming = True

    def _close(self) -> None:
        if self._streaming:
            self._streaming = False
            try:
                self.client._client.stop_stream(cancel_requests=True)
            except Exception:  # the stream may already be broken
                pass

    def _send(self, frame: Frame) -> None:
        if not self._in_flight:
            self._last_answer = time.monotonic()  # the wait for an answer starts now
        self._in_flight[frame.index] = (frame, time.monotonic())
        self.client._client.async_stream_infer(
            self.client.model,
            self.client._inputs(frame.image, frame.index),
            outputs=self.client._outputs(),
            request_id=str(frame.index),
        )

    # -- recovery ---------------------------------------------------------------------------
    def _reconnect(self, reason: str) -> bool:
        """After a transport failure: wait for the server, reopen, resend. False: gave up."""
        self._close()
        self.state = InferenceState.OFFLINE
        pending = sorted(self._in_flight)
        if self.retry_timeout == float("inf"):
            self.log(f"Triton at {self.client.url} is unreachable ({reason}); waiting for it")
        else:
            self.log(
                f"Triton at {self.client.url} is unreachable ({reason}); waiting up to "
                f"{self.retry_timeout:.0f} s for it (--retry-timeout) to resend {len(pending)} frame(s) in flight"
            )
        deadline = time.monotonic() + self.retry_timeout
        while time.monotonic() < deadline and not self._aborted.is_set():
            if self.recover is not None:
                try:
                    self.recover()
                except Exception as err:  # the server we own failed to restart: keep trying
                    self.log(f"restarting the server failed: {err}")
            if self.client.ready():
                try:
                    self.client._restore_transport()  # a restarted server knows none of our regions
                    self._open()
                    for index in pending:
                        self._send(self._in_flight[index][0])
                except InferenceServerException:
                    self._close()
                    time.sleep(0.5)
                    continue
                self.reconnects += 1
                self.resent += len(pending)
                self.state = InferenceState.ONLINE
                self.log(f"Triton is back; resent {len(pending)} frame(s)" if pending else "Triton is back")
                return True
            self._aborted.wait(0.5)
        if self._aborted.is_set():
            return False
        self._server_gone = True
        self.log(f"Triton did not come back within {self.retry_timeout:.0f} s; remaining frames are written unannotated")
        return False

    def _fail_in_flight(self, results: ReorderBuffer, message: str, unavailable: bool = False) -> None:
        for index, (frame, sent) in self._in_flight.items():
            self.client._release(index)
            results.put(index, Outcome(frame, None, message, time.monotonic() - sent, unavailable))
        self._in_flight.clear()

    # -- the ordered generator --------------------------------------------------------------
    def process(self, frames: Iterable[Frame]) -> Iterator[Outcome]:
        source = iter(frames)
        results = ReorderBuffer()
        request_errors: List[str] = []  # per-request errors not yet tied to a frame
        exhausted = False
        lost: List[str] = []  # why the stream broke, until it is reopened

        def broken(reason: str) -> None:
            # Keep answers that arrived before the failure; everything still in flight is
            # then resent (or failed), so errors not yet tied to a frame no longer count.
            self._drain(results)
            request_errors.clear()
            if not self.resend:  # live: by the time the server is back, these frames are stale
                self._fail_in_flight(results, f"server unavailable ({reason})", unavailable=True)
            lost[:] = [reason]  # reconnect once what is settled has been released

        self._open()
        try:
            while True:
                # 1. keep the window full, unless a per-request error must first be tied to its frame
                idle = False
                while (not exhausted and not request_errors and not lost
                       and len(self._in_flight) < self.max_in_flight):
                    if self._aborted.is_set():
                        return
                    frame = next(source, None)
                    if frame is None:
                        exhausted = True
                        break
                    if frame is IDLE:
                        idle = True
                        break
                    results.expect(frame.index)
                    if self._server_gone:
                        results.put(frame.index, Outcome(frame, None, "server unavailable", unavailable=True))
                        continue
                    try:
                        self._send(frame)
                    except InferenceServerException as err:
                        broken(_short(err))
                # 2. release what is complete, in frame order (failed frames too, before any wait)
                yield from results.ready()
                if (exhausted and not len(results)) or self._aborted.is_set():
                    return
                if lost:
                    reason = lost.pop()
                    if not self._reconnect(reason):
                        self._fail_in_flight(results, "server unavailable", unavailable=True)
                    continue
                if not self._in_flight:
                    continue
                # 3. wait for the next answer (briefly when the source may soon have a frame)
                try:
                    generation, result, error = self._events.get(
                        timeout=min(IDLE_WAIT, self.request_timeout) if idle else self.request_timeout)
                except queue.Empty:
                    if time.monotonic() - self._last_answer >= self.request_timeout:
                        broken(f"no answer for {self.request_timeout:.0f} s")
                    continue
                self._last_answer = time.monotonic()
                if result is _ABORT:
                    return
                if generation != self._generation:
                    continue  # a late event from a stream we already replaced
                if error is not None and _is_transport_error(error):
                    broken(_short(error))
                    continue
                if error is not None:
                    request_errors.append(_short(error))
                else:
                    self._accept(result, results)
                # Every request answers exactly once, so when the requests still in flight
                # number the unattributed errors, those requests are the failed ones.
                if request_errors and len(self._in_flight) <= len(request_errors):
                    self._fail_in_flight(results, request_errors[0])
                    request_errors.clear()
        finally:
            self._close()
            for index in self._in_flight:  # abandoned (interrupted or aborted): their slots are free again
                self.client._release(index)
            self._in_flight.clear()

    def _drain(self, results: ReorderBuffer) -> None:
        """Accept the answers of the current stream already waiting in the queue."""
        while True:
            try:
                generation, result, error = self._events.get_nowait()
            except queue.Empty:
                return
            if result is _ABORT:
                self._events.put((generation, result, error))  # process() still has to see it
                return
            if generation == self._generation and error is None:
                self._accept(result, results)

    def _accept(self, result, results: ReorderBuffer) -> None:
        try:
            index = int(result.get_response().id)
        except ValueError:
            return
        entry = self._in_flight.pop(index, None)
        if entry is None:
            return  # an answer for a frame already settled
        self.client._release(index)  # the server is done with this request's input
        frame, sent = entry
        latency = time.monotonic() - sent
        try:
            detections = self.client.codec.decode(result)
        except ValueError as err:
            results.put(index, Outcome(frame, None, f"bad response: {err}", latency))
            return
        self.answered += 1
        results.put(index, Outcome(frame, detections, None, latency))
