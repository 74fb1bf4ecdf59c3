"""`TritonClient`: one Triton server: health, the model and its contract, the transport, inference.

- `check()` / `checks()` turn "is the server there, does it serve our model, does the model
  match the contract" into one clear error each, and settle the model and the transport.
- `infer(image)`: one image, one request.
- `open_stream(callback)`: a `StreamSession` on the server's gRPC stream (send, release,
  close, reopen after the server came back), what `InferenceStream` drives.

The raw tritonclient client is made here from the url, or passed in (`raw=`) by tests that
stand a scripted peer in for the server.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

import numpy as np
import tritonclient.grpc as grpcclient

from .. import contract, interrupts
from ..contract import ModelInfo
from ..errors import InferenceError, ModelMismatch, ModelNotReady, ServerUnavailable
from ..frames import Detections
from ..states import Transport
from .codecs import OutputCheck, SeedCodec, codec_for
from .errors import (Call, ModelNotServed, ShmUnavailable, TritonFailure, mapped, squeeze, translate)
from .targets import is_loopback
from .transports import GrpcTransport, ShmTransport

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Reply:
    """A stream's answer to one request: its request id, and the detections it carries."""

    def __init__(self, result, decode: Callable[[object], Detections]):
        self._result = result
        self._decode = decode

    @property
    def request_id(self) -> str:
        return self._result.get_response().id

    def detections(self) -> Detections:
        """ValueError when the answer breaks the model's contract."""
        return self._decode(self._result)


# What a stream session calls for each answer, on tritonclient's stream thread: a Reply, or
# the error (RequestFailed: one request failed, no reliable id; StreamBroken: the stream ended).
Answer = Callable[[Optional[Reply], Optional[TritonFailure]], None]


class StreamSession:
    """The client's gRPC stream (tritonclient allows one per client at a time).

    send(key, image, request_id): the request's input occupies `key`'s transport slot until
    release(key) (shared memory: the server reads it until it answers). A send on a stream
    that failed raises StreamBroken; the answers, and the errors, go to the callback.
    reopen(callback): after the stream broke and the server is back: the transport restored
    (a restarted server knows none of our regions), then a new stream.
    """

    def __init__(self, raw, model: str, request: Callable[[Hashable, np.ndarray], Tuple[list, list]],
                 release: Callable[[Hashable], None], restore: Callable[[], None],
                 decode: Callable[[object], Detections], callback: Answer):
        self._raw = raw
        self._model = model
        self._request = request
        self._release = release
        self._restore = restore
        self._decode = decode
        self._open = False
        self._start(callback)

    def _start(self, callback: Answer) -> None:
        with mapped(Call.SEND):
            self._raw.start_stream(callback=functools.partial(self._answer, callback))
        self._open = True

    def _answer(self, callback: Answer, result=None, error=None) -> None:
        # Called on tritonclient's thread with keywords result=, error=.
        callback(Reply(result, self._decode) if result is not None else None,
                 translate(error, Call.ANSWER) if error is not None else None)

    def send(self, key: Hashable, image: np.ndarray, request_id: int) -> None:
        inputs, outputs = self._request(key, image)
        with mapped(Call.SEND):
            self._raw.async_stream_infer(self._model, inputs, outputs=outputs, request_id=str(request_id))

    def release(self, key: Hashable) -> None:
        """The server is done with `key`'s request (answered, failed or abandoned)."""
        self._release(key)

    def close(self) -> None:
        """Stop the stream, cancelling what is in flight (the client stays open)."""
        if self._open:
            self._open = False
            try:
                self._raw.stop_stream(cancel_requests=True)
            except Exception:  # the stream may already be broken
                pass

    def reopen(self, callback: Answer) -> None:
        """The transport restored, then a new stream with `callback`. Raises ServerUnavailable
        (ServerUnreachable, StreamBroken) while the server cannot take it yet."""
        self.close()
        self._restore()
        self._start(callback)


class TritonClient:
    """One Triton server: health, the model and its contract, the transport, inference.

    `model`: a model name, or None to pick the lean path by itself (`fasterrcnn_u8` when the
    server has it ready, else the seed's `fasterrcnn`); settled by check(). `transport`:
    auto (shared memory when the server is on this host), grpc or shm; settled by check().
    Until then the client speaks the seed model over gRPC. `raw`: the tritonclient gRPC
    client to use (made from `url` when None). `outputs`: where the boxes dropped for not being
    finite numbers are counted (the clients of one run share one; default: this client's own).
    """

    def __init__(self, url: str, model: Optional[str] = contract.MODEL_NAME, timeout: float = 10.0,
                 transport: Transport = Transport.GRPC, log: Log = _stderr, raw=None,
                 outputs: Optional[OutputCheck] = None):
        if not isinstance(transport, Transport):
            raise TypeError(f"transport {transport!r}: expected a streamer.states.Transport")
        self.url = url
        self.requested_model = model
        self.model = model or contract.MODEL_NAME
        self.codec = SeedCodec
        self.timeout = timeout
        self.transport_mode = transport
        self.log = log
        self.outputs = outputs if outputs is not None else OutputCheck(log)
        self._raw = raw if raw is not None else grpcclient.InferenceServerClient(url)
        self._transport = GrpcTransport()

    @property
    def transport(self) -> Transport:
        """The transport in use: Transport.GRPC or Transport.SHM."""
        return self._transport.name

    def close(self) -> None:
        with interrupts.critical():  # a second Ctrl-C must not leave regions behind
            try:
                self._transport.close()
            finally:
                self._transport = GrpcTransport()
                try:
                    self._raw.close()
                except Exception:  # closing a client whose channel already broke
                    pass

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- health and contract ---------------------------------------------------------------
    def ready(self) -> bool:
        try:
            with mapped(Call.SERVER):
                return bool(
                    self._raw.is_server_ready(client_timeout=2)
                    and self._raw.is_model_ready(self.model, client_timeout=2)
                )
        except TritonFailure:
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
            with mapped(Call.SERVER):
                self._raw.is_server_live(client_timeout=self.timeout)
        except TritonFailure as err:
            raise ServerUnavailable(
                f"no Triton server answers at {self.url} ({err}); start one with `streamer serve`, "
                "or leave out --triton to run the embedded server"
            ) from err
        yield "server live", self.url, None
        try:
            with mapped(Call.SERVER):
                server_ready = self._raw.is_server_ready(client_timeout=self.timeout)
            if not server_ready:
                raise ModelNotReady(
                    f"the server at {self.url} is live but not ready (models: {self._models_summary()})"
                )
            yield "server ready", "", None
            self.model = self._choose_model()
            yield "model ready", self.model, None
            with mapped(Call.SERVER):
                config = self._raw.get_model_config(self.model, client_timeout=self.timeout).config
        except TritonFailure as err:
            raise ServerUnavailable(f"Triton at {self.url} failed to answer ({err})") from err
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
        try:
            detail = self._setup_transport()
        except TritonFailure as err:  # the server went away meanwhile
            raise ServerUnavailable(f"Triton at {self.url} failed to answer ({err})") from err
        yield "transport", detail, None

    def _choose_model(self) -> str:
        wanted = [self.requested_model] if self.requested_model else list(contract.PREFERRED_MODELS)
        for name in wanted:
            with mapped(Call.SERVER):
                if self._raw.is_model_ready(name, client_timeout=self.timeout):
                    return name
        names = " or ".join(f"'{n}'" for n in wanted)
        fix = ("pick one of them with --model" if self.requested_model
               else "export it with `streamer export-model` and restart the server")
        raise ModelNotServed(
            f"the server at {self.url} does not serve a ready model {names} (models: {self._models_summary()}); {fix}"
        )

    def _models_summary(self) -> str:
        with mapped(Call.SERVER):
            index = self._raw.get_model_repository_index(client_timeout=self.timeout)
        parts = []
        for m in index.models:
            state = m.state or "unloaded"
            parts.append(f"{m.name} {state}" + (f": {squeeze(m.reason)}" if m.reason else ""))
        return "; ".join(parts) or "none"

    # -- the transport --------------------------------------------------------------------------
    def _setup_transport(self) -> str:
        """Shared memory where asked (or, under auto, where the server is on this host); else gRPC."""
        self._transport.close()
        self._transport = GrpcTransport()
        if self.transport_mode is Transport.GRPC or (self.transport_mode is Transport.AUTO
                                                     and not is_loopback(self.url)):
            return self._transport.describe
        transport = ShmTransport(self._raw, self.timeout)
        try:
            removed = transport.remove_dead()
            transport.probe()
        except ShmUnavailable as err:
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

    def _shm_failed(self, err: ShmUnavailable) -> None:
        """Shared memory refused: gRPC under auto (said once), an error under --transport shm."""
        self._transport.close()
        self._transport = GrpcTransport()
        reason = squeeze(err)
        if self.transport_mode is Transport.SHM:
            raise ShmUnavailable(
                f"--transport shm: shared memory with Triton at {self.url} failed ({reason}); the server must run "
                "on this host (or share its IPC namespace) and allow client shared memory, or use --transport grpc"
            ) from err
        self.transport_mode = Transport.GRPC
        self.log(f"WARNING: shared memory with Triton at {self.url} failed ({reason}); sending frames over gRPC")

    def _restore_transport(self) -> None:
        """After the server came back: regions registered again before anything is resent."""
        try:
            self._transport.reregister()
        except ShmUnavailable as err:
            self._shm_failed(err)

    # -- statistics -----------------------------------------------------------------------------
    def compute_stats(self) -> Tuple[int, float]:
        """(inferences, compute seconds) the server counted for the model.

        From the batch statistics: one execution of a batch of n requests counts its time
        once and n inferences (the per-request sums would count its time n times).
        """
        try:
            with mapped(Call.SERVER):
                stats = self._raw.get_inference_statistics(self.model, client_timeout=self.timeout)
        except TritonFailure:
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
            with mapped(Call.SERVER):
                stats = self._raw.get_inference_statistics(self.model, client_timeout=self.timeout)
        except TritonFailure:
            return {}
        executions: Dict[int, int] = {}
        for s in stats.model_stats:
            for b in s.batch_stats:
                executions[b.batch_size] = executions.get(b.batch_size, 0) + b.compute_infer.count
        return executions

    # -- inference ----------------------------------------------------------------------------
    def _request(self, key: Hashable, image: np.ndarray) -> Tuple[List[grpcclient.InferInput],
                                                                  List[grpcclient.InferRequestedOutput]]:
        """The request for `image` (inputs, outputs); under shm its input occupies `key`'s slot
        until _release(key)."""
        data = self.codec.encode(image)
        tensor = grpcclient.InferInput(self.codec.input_name, list(data.shape), self.codec.datatype)
        try:
            self._transport.set(key, tensor, data)
        except ShmUnavailable as err:
            self._shm_failed(err)
            self._transport.set(key, tensor, data)
        outputs = [grpcclient.InferRequestedOutput(name) for name in self.codec.output_names]
        return [tensor], outputs

    def _release(self, key: Hashable) -> None:
        self._transport.release(key)

    def _decode(self, result) -> Detections:
        return self.codec.decode(result, self.outputs)

    def infer(self, image: np.ndarray, timeout: float = 300.0) -> Detections:
        """One image, one request (no stream)."""
        key = object()
        try:
            inputs, outputs = self._request(key, image)
            with mapped(Call.SERVER):
                result = self._raw.infer(self.model, inputs, outputs=outputs, client_timeout=timeout)
        except ServerUnavailable as err:
            raise ServerUnavailable(f"Triton at {self.url} failed during inference ({err})") from err
        except TritonFailure as err:
            raise InferenceError(f"inference failed on the server: {err}") from err
        finally:
            self._release(key)
        try:
            return self._decode(result)
        except ValueError as err:
            raise ModelMismatch(f"model '{self.model}' answered outside the contract: {err}") from err

    def open_stream(self, callback: Answer) -> StreamSession:
        """A stream to the server for the checked model; `callback(reply, error)` gets each answer."""
        return StreamSession(self._raw, self.model, self._request, self._release, self._restore_transport,
                             self._decode, callback)
