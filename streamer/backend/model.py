"""Triton Python-backend twin of the LibTorch model `fasterrcnn`.

The local tritonserver (bundled in nvidia-pytriton) has no LibTorch backend, so
`streamer serve` copies this file next to a symlink of the same model.pt and
runs it with the Python backend. It must behave as the LibTorch backend does:
input__0 in, output__0..2 out, one image per request, errors per request.
Self-contained on purpose: the backend stub imports it as a plain file.
"""

import json
import os
import warnings

import numpy as np
import torch
import torchvision  # noqa: F401  (registers torchvision::nms / roi_align before torch.jit.load)
import triton_python_backend_utils as pb_utils

OUTPUT_NAMES = ("output__0", "output__1", "output__2")
warnings.filterwarnings("ignore", message="RCNN always returns")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("threads", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        # Denormal floats slow the CPU path of Faster R-CNN by about 40 %.
        torch.set_flush_denormal(True)
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location="cpu")
        self.model.eval()

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                image = pb_utils.get_input_tensor_by_name(request, "input__0").as_numpy()
                with torch.inference_mode():
                    outputs = self.model(torch.from_numpy(np.ascontiguousarray(image)))
                tensors = [
                    pb_utils.Tensor(name, out.numpy()) for name, out in zip(OUTPUT_NAMES, outputs)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as err:  # one bad request must not take the model down
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(err).__name__}: {err}"))
                )
        return responses

    def finalize(self):
        self.model = None
