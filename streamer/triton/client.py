"""`TritonClient`: one Triton server: health, the model and its contract, the transport, inference.

`check()` turns "is the server there, does it serve our model, does the model match the
contract" into one clear error each.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .. import contract, interrupts
from ..contract import ModelInfo
from ..errors import InferenceError, ModelMismatch, ModelNotReady, ServerUnavailable
from ..frames import Detections
from . import shm
from .codecs import SeedCodec, codec_for
from .errors import UNREACHABLE as _UNREACHABLE
from .errors import ShmUnavailable
from .errors import short as _short
from .errors import squeeze as _squeeze
from .transports import TRANSPORTS, GrpcTransport, ShmTransport, is_loopback

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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

