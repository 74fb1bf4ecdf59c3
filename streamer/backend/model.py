"""Triton Python-backend twin of the LibTorch models `fasterrcnn` and `fasterrcnn_u8`.

The local tritonserver (bundled in nvidia-pytriton) has no LibTorch backend, so
`streamer serve` copies this file next to a symlink of each model's model.pt and
runs it with the Python backend. It must behave as the LibTorch backend does:
the config's inputs in, its outputs out (in the config's order, which is the
TorchScript module's), errors per request.

With `max_batch_size > 0` (fasterrcnn_u8) every request carries a batch dimension
and Triton's dynamic batcher hands execute() several requests at once: frames of
the same size run together as one batch through the module, each request gets
its own slice of the outputs, and a request that fails does not fail the others.
Self-contained on purpose: the backend stub imports it as a plain file.
"""

import json
import os
import warnings

import numpy as np
import torch
import torchvision  # noqa: F401  (registers torchvision::nms / roi_align before torch.jit.load)
import triton_python_backend_utils as pb_utils

warnings.filterwarnings("ignore", message="RCNN always returns")


def _error(err):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(err).__name__}: {err}"))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("threads", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        # Denormal floats slow the CPU path of Faster R-CNN by about 40 %.
        torch.set_flush_denormal(True)
        self.input_name = config["input"][0]["name"]
        self.output_names = [t["name"] for t in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location="cpu")
        self.model.eval()

    def _run(self, image):
        with torch.inference_mode():
            outputs = self.model(torch.from_numpy(np.ascontiguousarray(image)))
        return [out.numpy() for out in outputs]

    def _respond(self, members, responses):
        """Run the requests `members` ([(index, image)], one frame size) as one batch."""
        images = [image for _, image in members]
        batch = images[0] if len(images) == 1 else np.concatenate(images)
        outputs = self._run(batch)
        start = 0
        for (index, image), rows in zip(members, (len(image) for image in images)):
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + rows]))
                       for name, out in zip(self.output_names, outputs)]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += rows

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}  # frame shape -> [(request index, image)]
        for index, request in enumerate(requests):
            try:
                image = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                if not self.batched:
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor(name, out) for name, out in zip(self.output_names, self._run(image))])
                    continue
                groups.setdefault(image.shape[1:], []).append((index, image))
            except Exception as err:  # one bad request must not take the model down
                responses[index] = _error(err)
        for members in groups.values():
            try:
                self._respond(members, responses)
            except Exception as err:
                if len(members) == 1:
                    responses[members[0][0]] = _error(err)
                    continue
                for member in members:  # find the bad frame; its batch mates still get answers
                    try:
                        self._respond([member], responses)
                    except Exception as single_err:
                        responses[member[0]] = _error(single_err)
        return responses

    def finalize(self):
        self.model = None
